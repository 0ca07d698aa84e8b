"""Benchmark: `tagger watch` as a service runs it. Peak memory, and how soon photos are tagged.

    python bench/watch.py [--images 48] [--size 1600x1200] [--trickle 0]

Starts a real `tagger watch` on an empty folder with the default settings (the artefact is
prepared first, as `tagger model prepare` would, so the export's torch is not counted),
waits for systemd's READY=1 on a notify socket, then moves the generated JPEGs in: all at
once, or one every `--trickle` seconds. Reports the daemon's peak RSS (VmHWM), whether
torch was ever loaded into it, and the seconds from the last arrival until every photo
was in the database. `watch.stability_delay` (2 s by default) is part of that time.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import make_images


def tagged(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from files where image_id is not null").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--trickle", type=float, default=0.0, help="seconds between arrivals")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    subprocess.run([sys.executable, "-m", "tagger", "model", "prepare"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        staged, uploads = work / "staged", work / "uploads"
        staged.mkdir()
        uploads.mkdir()
        photos = make_images(staged, args.images, (width, height), "jpg")
        db = work / "tagger.db"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(work / "notify.sock"))
        notify.settimeout(120)
        env = os.environ | {"NOTIFY_SOCKET": str(work / "notify.sock")}
        command = [sys.executable, "-m", "tagger", "--db", str(db), "watch", str(uploads)]
        daemon = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        while b"READY=1" not in notify.recv(4096).split(b"\n"):
            pass
        for photo in photos:
            photo.rename(uploads / photo.name)
            time.sleep(args.trickle)
        arrived = time.monotonic()
        while tagged(db) < len(photos) and daemon.poll() is None:
            time.sleep(0.05)
        latency = time.monotonic() - arrived
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        peak_kb = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])
        torch = "libtorch" in Path(f"/proc/{daemon.pid}/maps").read_text()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    print(
        f"tagger watch, {args.images} {args.size} JPEGs"
        f"{f', one every {args.trickle} s' if args.trickle else ', all at once'}:"
        f" peak RSS {peak_kb:,} kB ({peak_kb * 1024 / 1e6:.0f} MB), torch loaded: {torch},"
        f" all tagged {latency:.1f} s after the last arrived"
    )


if __name__ == "__main__":
    main()
