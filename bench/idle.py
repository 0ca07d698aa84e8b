"""Benchmark: what `tagger watch` costs while nothing happens, on a large library.

    python bench/idle.py [--photos 100000] [--periods 2] [--poll 10] [--rescan 30]
                         [--distinct 200] [--keep DIR]

Builds a library of small JPEGs (64x64, 100 to a folder; `--distinct` different contents,
the rest byte copies, so that the one `tagger scan` that tags it mostly links content it
has seen), then runs a real `tagger watch` on it, first with inotify and then polling:
each first without rescans (`watch.rescan_interval = 0`, measured for 30 s after its
start-up reconcile), then with a short rescan interval, measured from the end of the first
periodic rescan to the end of the `--periods`-th after it, so that the window holds whole
rescan periods. Reports CPU (utime+stime from /proc/PID/stat) as a share of one core, what
a rescan costs (walk, stat, the writer's sweep), and what that comes to at the default rescan
interval (5 minutes). `--keep DIR` keeps (and reuses) the library and its database. The
machine is shared: the load average is printed beside.
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
BASELINE = 30.0  # seconds an idle daemon without rescans is measured
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


RESCANNED = re.compile(r"rescanned .* in ([\d.]+) s CPU, ([\d.]+) s")


def start(work: Path, library: Path, observer: str, poll: float, rescan: float) -> Running:
    log = work / f"watch-{observer}.log"
    env = os.environ | {
        "TAGGER_WATCH__OBSERVER": observer,
        "TAGGER_WATCH__POLL_INTERVAL": str(poll),
        "TAGGER_WATCH__RESCAN_INTERVAL": str(rescan),
    }
    command = [sys.executable, "-m", "tagger", "--db", str(work / "tagger.db"), "watch"]
    with log.open("w") as out:
        return Running(
            subprocess.Popen([*command, str(library)], env=env, stdout=out, stderr=out), log
        )


class Running:
    def __init__(self, daemon: subprocess.Popen[bytes], log: Path) -> None:
        self.daemon, self.log = daemon, log

    def rescans(self) -> list[tuple[float, float]]:
        """(CPU, wall) seconds of each rescan logged, the start-up reconcile first. The CPU
        is the walk's; the writer's sweep after it is not in it."""
        found = RESCANNED.findall(self.log.read_text())
        return [(float(cpu), float(wall)) for cpu, wall in found]

    def wait_rescans(self, count: int) -> None:
        while len(self.rescans()) < count:
            if self.daemon.poll() is not None:
                raise SystemExit(f"tagger watch stopped:\n{self.log.read_text()}")
            time.sleep(0.05)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far (utime+stime), and the monotonic clock."""
        fields = Path(f"/proc/{self.daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS, time.monotonic()

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.daemon.pid}/status").read_text()
        return int(re.findall(r"VmRSS:\s+(\d+)", status)[0]) / 1024

    def stop(self) -> None:
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(60)


def share(before: tuple[float, float], after: tuple[float, float]) -> float:
    return (after[0] - before[0]) / (after[1] - before[1])


def idle(
    work: Path, library: Path, observer: str, periods: int, poll: float, rescan: float
) -> dict[str, float]:
    """Two daemons: one without rescans (`baseline` seconds after its reconcile), then one
    measured from the end of its first periodic rescan to the end of the `periods`-th after
    it, which holds whole rescan periods: a rescan costs what it adds to the baseline."""
    quiet = start(work, library, observer, poll, 0)
    try:
        quiet.wait_rescans(1)
        time.sleep(5)  # the reconcile's sweep, written after its walk
        before = quiet.cpu()
        time.sleep(BASELINE)
        baseline = share(before, quiet.cpu())
        rss = quiet.rss_mb()
    finally:
        quiet.stop()
    busy = start(work, library, observer, poll, rescan)
    try:
        busy.wait_rescans(2)  # the reconcile, then the first periodic rescan
        before = busy.cpu()
        busy.wait_rescans(2 + periods)
        after = busy.cpu()
    finally:
        busy.stop()
    walks = busy.rescans()[2 : 2 + periods]
    return {
        "wall": after[1] - before[1],
        "cpu": share(before, after),
        "baseline": baseline,
        "rescan_cpu": (share(before, after) - baseline) * (after[1] - before[1]) / periods,
        "walk_cpu": max(c for c, _ in walks),
        "rescan_wall": max(w for _, w in walks),
        "rss_mb": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=200, help="different contents")
    parser.add_argument("--periods", type=int, default=2, help="rescan periods measured")
    parser.add_argument("--poll", type=float, default=10.0, help="watch.poll_interval")
    parser.add_argument("--rescan", type=float, default=30.0, help="watch.rescan_interval")
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
            got = idle(work, library, observer, args.periods, args.poll, args.rescan)
            defaults = got["baseline"] + got["rescan_cpu"] / DEFAULT_RESCAN
            print(
                f"{observer:8s} {args.photos:,} photos, poll every {args.poll:g} s: "
                f"{100 * got['baseline']:.2f}% of a core without rescans; rescan every "
                f"{args.rescan:g} s: {100 * got['cpu']:.2f}% over {got['wall']:.0f} s, "
                f"{got['rescan_cpu']:.2f} s CPU a rescan ({got['walk_cpu']:.2f} s its walk, "
                f"{got['rescan_wall']:.2f} s wall); rescans every {DEFAULT_RESCAN:g} s: "
                f"{100 * defaults:.2f}%; RSS {got['rss_mb']:.0f} MB; "
                f"load {os.getloadavg()[0]:.2f}"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
