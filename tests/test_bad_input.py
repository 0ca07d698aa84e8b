"""Everything a NAS folder throws at tagger: recorded with a reason, never a crash or a hang."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import Result
from PIL import Image

from tagger.errors import Unreadable
from tagger.hashing import hash_file, stat_file

PHOTOS = Path(__file__).parent / "photos"
CAT = (PHOTOS / "coral_cat_720p.jpg").read_bytes()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares `width`x`height` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width * 3 + 1) * 2)  # two rows of the 60000
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(size: tuple[int, int] | None = None) -> Image.Image:
    cat = Image.open(io.BytesIO(CAT)).convert("RGB")
    return cat.resize(size) if size else cat


def corrupt_exif(jpeg: bytes) -> bytes:
    """The photo with an APP1 Exif segment whose TIFF header and IFD are garbage."""
    junk = b"Exif\0\0MM\0*\xff\xff\xff\xf0" + os.urandom(64)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + jpeg[2:]


def make_corpus(folder: Path, outside: Path) -> tuple[dict[str, str], list[str]]:
    """Write the corpus; returns ({bad file: expected reason}, [odd but good files])."""
    bad: dict[str, str] = {}

    def add(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        bad[name] = reason

    add("empty.jpg", b"", "empty file")
    add("truncated.jpg", CAT[: len(CAT) // 2], "damaged image data")
    add("truncated.png", encoded(photo(), "PNG")[:30000], "damaged image data")
    add("random.jpg", np.random.default_rng(1).bytes(50_000), "not an image")
    add("notes.png", b"shopping list: milk, eggs\n", "not an image")
    add("page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not an image")
    add("evil\x1b[2J\nname.jpg", b"clears your terminal", "not an image")
    add("bomb.png", png_header_only(60_000, 60_000), "too many pixels: 60000x60000")
    add("huge.jpg", CAT + b"\0" * 3_000_000, "file too large")
    os.mkfifo(folder / "pipe.jpg")
    bad["pipe.jpg"] = "not a regular file (a FIFO)"
    (outside / "elsewhere.jpg").write_bytes(CAT)
    (folder / "outside.jpg").symlink_to(outside / "elsewhere.jpg")
    bad["outside.jpg"] = "a symlink, not followed"
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    bad["loop.jpg"] = "a symlink, not followed"
    (folder / "loopdir").symlink_to(folder, target_is_directory=True)  # not entered
    os.close(os.open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), os.O_CREAT | os.O_WRONLY))
    bad["caf\\xe9.jpg"] = "not valid UTF-8"
    (folder / "x.jpg").mkdir()  # a folder with a photo's name is a folder

    good = ["one_pixel.png", "tall.png", "cmyk.jpg", "deep.png", "animated.gif", "bad_exif.jpg"]
    (folder / "one_pixel.png").write_bytes(encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    (folder / "tall.png").write_bytes(encoded(photo((1, 20_000)), "PNG"))
    (folder / "cmyk.jpg").write_bytes(encoded(photo().convert("CMYK"), "JPEG"))
    deep = np.asarray(photo().convert("L"), dtype=np.uint16) * 257  # 16 bits per pixel
    (folder / "deep.png").write_bytes(encoded(Image.fromarray(deep), "PNG"))
    frames = [photo((320, 240)), photo((320, 240)).rotate(180)]
    (folder / "animated.gif").write_bytes(
        encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    )
    (folder / "bad_exif.jpg").write_bytes(corrupt_exif(CAT))
    long_dir = folder / "/".join(["a" * 200] * 15)  # a path of about 3,000 characters
    long_dir.mkdir(parents=True)
    (long_dir / "deep_in_here.jpg").write_bytes(CAT)
    good.append(str((long_dir / "deep_in_here.jpg").relative_to(folder)))
    return bad, good


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
