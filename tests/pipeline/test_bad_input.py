"""Everything a NAS folder throws at tagger: recorded with a reason, never a crash or a hang."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.errors import Unreadable
from tagger.pipeline.hashing import hash_file, stat_file
from tests.corpus import CAT, make_corpus
from tests.helpers import Result


def errors_by_name(tagger: Callable[..., Result], folder: Path) -> dict[str, str]:
    result = tagger("errors", "--format", "json")
    assert result.code == 0, result.err
    return {
        str(Path(row["path"]).relative_to(folder)): row["reason"] for row in json.loads(result.out)
    }


def test_every_kind_of_bad_file_is_recorded_and_the_rest_is_tagged(
    tagger: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, outside = tmp_path / "uploads", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    bad, good = make_corpus(folder, outside)
    monkeypatch.setenv("TAGGER_SCAN__MAX_FILE_SIZE", "2000000")

    result = tagger("scan", str(folder))
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    errors = errors_by_name(tagger, folder)
    assert set(errors) == set(bad)
    for name, reason in bad.items():
        assert reason in errors[name], (name, errors[name])
    for name in good:
        shown = tagger("show", "--format", "json", str(folder / name))
        assert json.loads(shown.out)["status"] == "tagged", name
    # One line per skipped file in the log, control characters and bad bytes escaped.
    skipped = [line for line in result.err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(bad)
    assert any("caf\\xe9.jpg" in line for line in skipped)
    assert any("evil\\x1b[2J\\nname.jpg" in line for line in skipped)
    assert "\x1b" not in result.err
    assert "\x1b" not in tagger("errors").out  # the table escapes it too


def test_a_file_that_vanishes_or_changes_while_read_is_a_retryable_failure(tmp_path: Path) -> None:
    target = tmp_path / "busy.jpg"
    target.write_bytes(CAT)
    info = stat_file(str(target))
    target.write_bytes(CAT + b"more")  # rewritten between the stat and the read
    with pytest.raises(Unreadable, match="changed while it was read"):
        hash_file(info)
    target.unlink()
    with pytest.raises(Unreadable, match="vanished"):
        stat_file(str(target))


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv to drop root")
def test_a_file_without_read_permission_is_recorded_then_tagged_once_readable() -> None:
    # As root every file is readable: run tagger as `nobody` so permissions apply.
    work = Path(tempfile.mkdtemp(prefix="tagger-perm-"))
    try:
        work.chmod(0o777)
        (work / "locked.jpg").write_bytes(CAT)
        (work / "locked.jpg").chmod(0o000)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        env |= {"HOME": str(work), "XDG_DATA_HOME": str(work), "XDG_CONFIG_HOME": str(work)}
        env["TAGGER_MODEL__RUNTIME"] = "torch"  # no model export needed for this one
        as_user = (
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            if os.geteuid() == 0
            else []
        )

        def tagger(*args: str) -> subprocess.CompletedProcess[str]:
            command = [*as_user, sys.executable, "-m", "tagger", "--db", str(work / "t.db"), *args]
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

        first = tagger("scan", str(work))
        assert first.returncode == 0, first.stderr
        assert "permission denied" in first.stderr
        assert "permission denied" in tagger("errors").stdout
        (work / "locked.jpg").chmod(0o644)
        second = tagger("scan", str(work))
        assert "1 new" in second.stdout, second.stdout + second.stderr
        assert tagger("errors").stdout.strip() == ""
    finally:
        shutil.rmtree(work)


def test_followed_symlinks_never_loop(
    tagger: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    (folder / "2024" / "cat.jpg").write_bytes(CAT)
    (folder / "2024" / "again").symlink_to(folder, target_is_directory=True)  # a loop
    monkeypatch.setenv("TAGGER_SCAN__FOLLOW_SYMLINKS", "true")
    result = tagger("scan", str(folder))
    assert result.code == 0, result.err
    assert "1 files: 1 new" in result.out
    assert "symlink loop" in result.err
