"""The Docker image's goals, measured: size, first start to ready, steady memory, and how
fast `docker stop` ends it at any moment (issue 15: <= 300 MB, < 5 s, < 250 MB, 0 within 2 s).

    docker build --build-arg PYTHON_IMAGE=tagger-base:bookworm -t tagger .
    python bench/docker.py tagger [--photos tests/photos] [--runs 5]

"Ready" is the first 200 from /healthz (the daemon has loaded the model and watches).
Memory is VmRSS of the daemon (pid 1) after the folder is tagged and the web page has
answered a /predict: the steady state of a NAS container.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

DOCKER = shutil.which("docker", path="/usr/bin") or shutil.which("docker") or "docker"


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True).stdout


def start(image: str, photos: Path, data: Path, port: int) -> str:
    return docker(
        "run", "-d", "--read-only", "--user", "1026:100", "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{photos}:/app/uploads:ro", "-v", f"{data}:/data", image,
    ).strip()  # fmt: skip


def ready(port: int, timeout: float = 60) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("the container never became ready")


def stop(container: str) -> tuple[float, int]:
    began = time.perf_counter()
    docker("stop", container)
    took = time.perf_counter() - began
    code = int(docker("inspect", "-f", "{{.State.ExitCode}}", container))
    docker("rm", container)
    return took, code


def rss_mb(container: str) -> float:
    status = docker("exec", container, "cat", "/proc/1/status")
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return kb / 1024


def fresh(root: Path) -> Path:
    data = Path(tempfile.mkdtemp(dir=root))
    data.chmod(0o777)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--photos", type=Path, default=Path("tests/photos"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=18089)
    args = parser.parse_args()
    size = int(docker("image", "inspect", "-f", "{{.Size}}", args.image)) / 1e6
    print(f"image {args.image}: {size:.0f} MB")
    root = Path(tempfile.mkdtemp())
    photos = args.photos.resolve()
    try:
        starts, stops, rss = [], [], []
        for _ in range(args.runs):
            container = start(args.image, photos, fresh(root), args.port)
            starts.append(ready(args.port))
            time.sleep(5)  # the folder tagged, the daemon idle
            with (photos / "coral_parrot.jpg").open("rb") as handle:
                body = handle.read()
            boundary = "benchboundary"
            payload = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
                ).encode()
                + body
                + f"\r\n--{boundary}--\r\n".encode()
            )
            request = urllib.request.Request(
                f"http://127.0.0.1:{args.port}/predict",
                data=payload,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            urllib.request.urlopen(request, timeout=30).read()
            rss.append(rss_mb(container))
            stops.append(stop(container))
        # docker stop at the worst moments: during the first start, and mid-tagging.
        moments = []
        for delay in (0.2, 0.6, 1.0):
            container = start(args.image, photos, fresh(root), args.port)
            time.sleep(delay)
            moments.append((delay, *stop(container)))
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    print(
        f"first start to ready: median {statistics.median(starts):.2f} s, max {max(starts):.2f} s"
    )
    print(f"steady RSS after tagging and a /predict: max {max(rss):.0f} MB")
    took = [t for t, _ in stops]
    print(
        f"docker stop when idle: max {max(took):.2f} s, exit codes {sorted({c for _, c in stops})}"
    )
    for delay, took_s, code in moments:
        print(f"docker stop {delay:.1f} s after start: {took_s:.2f} s, exit code {code}")


if __name__ == "__main__":
    main()
