"""The decode memory budget (scan.decode_memory) and the marker that survives a decode the
process died in: a tiny file of huge dimensions must not kill a 1 GB machine, twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tagger.errors import BadImage
from tagger.inference.specs import Geometry
from tagger.pipeline.decode import DecodeMemory, decode_cost
from tagger.pipeline.hashing import hash_file, stat_file
from tagger.pipeline.stages import decode_or_fail
from tagger.records import Failure, FileInfo, Hashed
from tests.helpers import PHOTOS, ROOT, Result

SIDE = 12_000  # 144 MP: under scan.max_pixels, 720 MB to decode, a 17 kB PNG


def bomb(path: Path) -> Path:
    """A few kB of 1-bit PNG that Pillow decodes to 144 MB, then 576 MB of RGB."""
    Image.new("1", (SIDE, SIDE)).save(path)
    return path


def hashed(path: Path) -> Hashed:
    return hash_file(stat_file(str(path)))


HASHED = Hashed(FileInfo("/photos/big.png", 10, 1), "ab" * 32)


def test_an_image_needing_more_than_the_whole_budget_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    with Image.open(bomb(tmp_path / "big.png")) as image:
        assert decode_cost(image) == SIDE * SIDE * 5
    memory = DecodeMemory(256_000_000, tmp_path / "decoding")
    failure = decode_or_fail(hashed(tmp_path / "big.png"), Geometry(), 200_000_000, memory)
    assert isinstance(failure, Failure) and not failure.transient
    assert failure.reason == ("needs about 720 MB to decode, over scan.decode_memory (256 MB)")
    assert not (tmp_path / "decoding").exists()  # refused before anything was marked


def test_a_jpeg_is_costed_at_its_draft_size() -> None:
    photo = hashed(PHOTOS / "coral_cat_720p.jpg")
    tight = DecodeMemory(2_000_000)  # 1280x720 RGB would need 3.7 MB; drafted, 0.9 MB
    decoded = decode_or_fail(photo, Geometry(), 200_000_000, tight)
    assert not isinstance(decoded, Failure), decoded.reason


def test_big_decodes_wait_for_each_other_and_small_ones_run_side_by_side(tmp_path: Path) -> None:
    memory = DecodeMemory(100, tmp_path / "decoding")
    inside: list[int] = []
    most = [0]
    lock = threading.Lock()

    def fake_decode(need: int, pause: float) -> None:
        with memory.reserve(need, HASHED):
            with lock:
                inside.append(need)
                most[0] = max(most[0], len(inside))
            time.sleep(pause)
            with lock:
                inside.remove(need)

    def together(need: int) -> int:
        most[0] = 0
        threads = [threading.Thread(target=fake_decode, args=(need, 0.3)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return most[0]

    started = time.monotonic()
    assert together(60) == 1  # two big images: one after the other
    assert time.monotonic() - started >= 0.6
    assert together(20) == 2  # small ones at once
    with pytest.raises(BadImage, match=r"over scan\.decode_memory"), memory.reserve(101, HASHED):
        pass


def test_a_big_decode_is_marked_while_it_runs(tmp_path: Path) -> None:
    markers = tmp_path / "decoding"
    memory = DecodeMemory(100, markers)
    with memory.reserve(25, HASHED):
        held = json.loads((markers / HASHED.sha256).read_text())
        assert held == {"path": "/photos/big.png", "size": 10, "mtime_ns": 1}
    assert not (markers / HASHED.sha256).exists()
    with memory.reserve(24, HASHED):  # a small one is not worth a write
        assert not (markers / HASHED.sha256).exists()
    with pytest.raises(RuntimeError), memory.reserve(50, HASHED):
        raise RuntimeError("the decode failed")
    assert not (markers / HASHED.sha256).exists()


def scan_peak_rss(folder: Path, work: Path, env: dict[str, str]) -> tuple[str, int]:
    """Run a real `tagger scan` in a child process; its output and its peak RSS in kB."""
    command = [sys.executable, "-m", "tagger", "--db", str(work / "t.db"), "scan", str(folder)]
    child = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, out
    return out, usage.ru_maxrss


def test_a_decompression_bomb_under_max_pixels_is_refused_without_the_memory(
    tmp_path: Path,
) -> None:
    plain, with_bomb = tmp_path / "plain", tmp_path / "bomb"
    for folder in (plain, with_bomb):
        folder.mkdir()
        for name in ("coral_cat_720p.jpg", "coral_parrot.jpg"):
            shutil.copy(PHOTOS / name, folder / name)
    bomb(with_bomb / "big.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    env |= {"TAGGER_MODEL__RUNTIME": "torch", "TAGGER_SCAN__DECODE_MEMORY": "200000000"}

    _, baseline = scan_peak_rss(plain, tmp_path / "plain-db", env)
    out, peak = scan_peak_rss(with_bomb, tmp_path / "bomb-db", env)
    assert "2 new" in out and "1 failed" in out, out
    assert "needs about 720 MB to decode, over scan.decode_memory (200 MB)" in out
    # Decoding it costs ~540 MB more than the same scan without it (torch alone is ~950 MB).
    assert peak - baseline < 150_000, (baseline, peak)


def test_a_file_the_process_died_decoding_is_recorded_not_decoded_again(
    tagger: Callable[..., Result], photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = bomb(photo_dir / "big.png")
    # Enough budget to decode it: only the marker stands between this scan and the file.
    monkeypatch.setenv("TAGGER_SCAN__DECODE_MEMORY", "2000000000")
    monkeypatch.setenv("TAGGER_MODEL__RUNTIME", "torch")
    # What a scan killed by the OOM killer while decoding big.png leaves behind.
    content = hashed(big)
    markers = tmp_path / "xdg-data" / "tagger" / "decoding"
    markers.mkdir()
    file = content.file
    (markers / content.sha256).write_text(
        json.dumps({"path": file.path, "size": file.size, "mtime_ns": file.mtime_ns})
    )

    scan = tagger("scan", str(photo_dir))
    assert scan.code == 0, scan.err
    photos = len(list(PHOTOS.glob("*.jpg")))
    assert f"{photos} new" in scan.out and "1 failed" in scan.out, scan.out
    assert "the process died while decoding this image" in scan.err
    assert not list(markers.iterdir())
    errors = json.loads(tagger("errors", "--format", "json").out)
    assert [(row["path"], row["reason"]) for row in errors] == [
        (
            str(big),
            "the process died while decoding this image (out of memory?);"
            " not tried again until the file changes",
        )
    ]
    again = tagger("scan", str(photo_dir))
    assert f"0 new, 0 duplicate content, {photos + 1} unchanged, 0 failed" in again.out, again.out
