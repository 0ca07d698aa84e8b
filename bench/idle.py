"""Benchmark: what `tagger watch` costs while nothing happens, on a large library.

    python bench/idle.py [--photos 100000] [--window 60] [--distinct 200] [--keep DIR]

Builds a library of small JPEGs (64x64, 100 to a folder; `--distinct` different contents,
the rest byte copies, so that the one `tagger scan` that tags it mostly links content it
has seen), then runs a real `tagger watch` on it, first with inotify and then polling,
each for `--window` seconds after start-up (the reconcile is over), with a rescan
interval that puts a few rescans into the window. Reports each daemon's CPU (utime+stime
from /proc/PID/stat) as a share of one core over the window, and the CPU and wall time of
the rescans it logged. The machine is shared: the load average is printed beside.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PER_FOLDER = 100
DEFAULT_RESCAN = 300.0  # watch.rescan_interval's default
TICKS = os.sysconf("SC_CLK_TCK")


def build(root: Path, photos: int, distinct: int) -> None:
    rng = np.random.default_rng(0)
    contents = []
    for _ in range(distinct):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((64, 64), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        contents.append(out.getvalue())
    for i in range(photos):
        folder = root / f"{i // (PER_FOLDER * 100):03d}" / f"{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{i:06d}.jpg").write_bytes(contents[i % distinct])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def idle(
    work: Path, library: Path, observer: str, window: float, poll: float, rescan: float
) -> dict[str, float]:
    """CPU share of one core over `window` seconds of an idle `tagger watch`, its rescans
    within the window, and its resident memory."""
    log = work / f"watch-{observer}.log"
    env = os.environ | {
        "TAGGER_WATCH__OBSERVER": observer,
        "TAGGER_WATCH__POLL_INTERVAL": str(poll),
        "TAGGER_WATCH__RESCAN_INTERVAL": str(rescan),
    }
    command = [sys.executable, "-m", "tagger", "--db", str(work / "tagger.db"), "watch"]
    with log.open("w") as out:
        daemon = subprocess.Popen([*command, str(library)], env=env, stderr=out, stdout=out)
    try:
        while "reconciled:" not in log.read_text():
            if daemon.poll() is not None:
                raise SystemExit(f"tagger watch stopped:\n{log.read_text()}")
            time.sleep(0.2)
        time.sleep(2)  # the end of start-up: imports done, a first poll
        before = len(log.read_text())
        cpu0, wall0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(window)
        cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
        rss = int(re.findall(r"VmRSS:\s+(\d+)", Path(f"/proc/{daemon.pid}/status").read_text())[0])
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    text = log.read_text()
    pattern = r"rescanned .* in ([\d.]+) s CPU, ([\d.]+) s"
    rescans = [(float(c), float(w)) for c, w in re.findall(pattern, text[before:])]
    reconcile = [float(c) for c, _ in re.findall(pattern, text[:before])]
    cpu = cpu1 - cpu0
    rescan_cpu = max((c for c, _ in rescans), default=reconcile[0] if reconcile else 0.0)
    return {
        "cpu": cpu / (wall1 - wall0),
        "between": (cpu - sum(c for c, _ in rescans)) / (wall1 - wall0),
        "rescans": len(rescans),
        "rescan_cpu": rescan_cpu,
        "rescan_wall": max((w for _, w in rescans), default=float("nan")),
        "rss_mb": rss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=200, help="different contents")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--poll", type=float, default=10.0, help="watch.poll_interval")
    parser.add_argument("--rescan", type=float, default=20.0, help="watch.rescan_interval")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the library here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tagger-idle-"))
    library = work / "library"
    env = dict(os.environ)
    try:
        if not (work / "tagger.db").exists():
            start = time.monotonic()
            shutil.rmtree(library, ignore_errors=True)
            build(library, args.photos, args.distinct)
            built = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "tagger", "--db", str(work / "tagger.db"), "scan",
                 str(library)],
                check=True, env=env, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            print(
                f"built {args.photos:,} photos in {built - start:.0f} s, "
                f"tagged in {time.monotonic() - built:.0f} s"
            )
        print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
        for observer in ("native", "polling"):
            got = idle(work, library, observer, args.window, args.poll, args.rescan)
            defaults = got["between"] + got["rescan_cpu"] / DEFAULT_RESCAN
            print(
                f"{observer:8s} {args.photos:,} photos, poll every {args.poll:g} s, rescan every "
                f"{args.rescan:g} s: {100 * got['cpu']:.2f}% of a core over {args.window:g} s "
                f"({got['rescans']:.0f} rescans in it, the longest {got['rescan_cpu']:.2f} s CPU, "
                f"{got['rescan_wall']:.2f} s wall; {100 * got['between']:.2f}% between rescans); "
                f"at a rescan every {DEFAULT_RESCAN:g} s: {100 * defaults:.2f}%; "
                f"RSS {got['rss_mb']:.0f} MB; load {os.getloadavg()[0]:.2f}"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
