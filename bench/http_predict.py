"""Benchmark: `tagger watch --listen`'s POST /predict against the Flask-style demo server.

    python bench/http_predict.py [--seconds 20] [--warmup 3] [--clients 1,4,16]
                                 [--rounds 1] [--images 32] [--json out.json]

Makes real 1600x1200 JPEGs from tests/photos (bench/run.py's `make_images`), starts both
servers as subprocesses on loopback (tagger with its default runtime, its model exported
first as `tagger model prepare` does, into a temporary data directory; the peer is
bench/flask_peer.py: Flask, full Pillow decode, torchvision transforms, batch 1 in torch
fp32, on the same EfficientNet-Lite0 weights), compares their answers (top-1 agreement), then
for each number of concurrent clients runs the two one after the other (the order swapped at
every step): each client is a thread with its own keep-alive `http.client` connection,
posting the photos in a loop. After `--warmup` seconds, `--seconds` of completed requests
are counted: throughput, p50/p95 latency, and the server's CPU time per image (its process
and children, from /proc: robust to other load, unlike wall time). Peak RSS is VmHWM of
each server's process and its children at the end. Clients and servers share the machine's
cores, so only the ratios of one run mean anything. Results: docs/benchmarks.md.

Not named http.py: in bench/, which leads sys.path for every script here, that would shadow
the standard library's `http` (and so urllib, torch.hub, Flask) for all of them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from run import make_images

HERE = Path(__file__).resolve().parent
BOUNDARY = "tagger-bench-4f1c2a"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def tree(self) -> list[int]:
        """The server's pid and those of all its live descendants."""
        pids, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += map(int, (task / "children").read_text().split())
                except OSError:
                    continue
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its live children (and their waited-for ones)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])
        return total / tick

    def peak_rss_kb(self) -> int:
        """VmHWM of the server and of each live child, added up."""
        total = 0
        for pid in self.tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "0 0")
            total += int(line.split()[1])
        return total

    def torch_loaded(self) -> bool:
        return "libtorch" in Path(f"/proc/{self.process.pid}/maps").read_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def multipart(data: bytes, name: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post(port: int, body: bytes) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/predict", body, HEADERS)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"POST /predict on port {port}: {response.status} {payload[:200]!r}")
    return json.loads(payload)


def start(name: str, command: list[str], env: dict[str, str], work: Path, port: int) -> Server:
    log = work / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    return Server(name, process, port, log)


def _die_with_parent() -> None:
    """In the child: SIGTERM when this benchmark dies, even by SIGKILL (Linux prctl)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    tail = server.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{server.name} did not become healthy:\n{tail}")


def stop(server: Server) -> None:
    """SIGTERM (tagger drains and exits), SIGKILL if that takes over 30 s."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def start_tagger(work: Path, env: dict[str, str]) -> Server:
    prepare = [sys.executable, "-m", "tagger", "model", "prepare"]
    done = subprocess.run(prepare, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"tagger model prepare failed:\n{done.stderr[-3000:]}")
    port = free_port()
    command = [sys.executable, "-m", "tagger", "--db", str(work / "tagger.db"), "watch"]
    command += ["--listen", f"127.0.0.1:{port}"]
    return start("tagger", command, env, work, port)


def start_peer(work: Path, env: dict[str, str]) -> Server:
    port = free_port()
    command = [sys.executable, str(HERE / "flask_peer.py"), "--port", str(port)]
    return start("peer", command, env, work, port)


def load(server: Server, bodies: list[bytes], clients: int, warmup: float, seconds: float) -> Any:
    """`clients` threads posting in a loop; what completed in the window after the warm-up."""
    done: list[tuple[float, float]] = []
    errors: list[str] = []
    begin = time.perf_counter()
    window = (begin + warmup, begin + warmup + seconds)

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        i = offset
        while (sent := time.perf_counter()) < window[1] and len(errors) < 20:
            body, i = bodies[i % len(bodies)], i + 1
            try:
                conn.request("POST", "/predict", body, HEADERS)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn.close()  # http.client reconnects on the next request
                continue
            if response.status != 200:
                errors.append(f"{response.status} {payload[:200]!r}")
            else:
                done.append((sent, time.perf_counter()))
        conn.close()

    threads = [
        threading.Thread(target=client, args=(n * len(bodies) // clients,), daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    cpu0, own0 = server.cpu_seconds(), sum(os.times()[:2])
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    cpu1, own1 = server.cpu_seconds(), sum(os.times()[:2])
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{server.name}, {clients} clients: {len(errors)} errors: {errors[:3]}")
    inside = [end - sent for sent, end in done if window[0] <= end <= window[1]]
    latencies = np.array(inside) * 1000
    return {
        "server": server.name,
        "clients": clients,
        "requests": len(inside),
        "images_per_s": len(inside) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "server_cpu_ms_per_image": (cpu1 - cpu0) * 1000 / max(1, len(inside)),
        "client_cpu_ms_per_image": (own1 - own0) * 1000 / max(1, len(inside)),
        "cores_used": (cpu1 - cpu0) / seconds,
    }


def same_answers(servers: list[Server], bodies: list[bytes]) -> tuple[int, float]:
    """Top-1 agreement of the two servers on every photo, and the largest score gap."""
    agree, gap = 0, 0.0
    for body in bodies:
        ours, theirs = (post(s.port, body)[0] for s in servers)
        agree += ours["class_index"] == theirs["class_index"]
        gap = max(gap, abs(ours["score"] - theirs["score"]))
    return agree, gap


def report(rows: list[dict[str, Any]], servers: list[Server]) -> dict[str, Any]:
    print("| clients | server | images/s | p50 ms | p95 ms | server CPU ms/image | cores used |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["clients"], r["server"] != "tagger")):
        print(
            f"| {r['clients']} | {r['server']} | {r['images_per_s']:.1f} | {r['p50_ms']:.0f}"
            f" | {r['p95_ms']:.0f} | {r['server_cpu_ms_per_image']:.1f}"
            f" | {r['cores_used']:.2f} |"
        )
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["server"], r["clients"]), []).append(r)
    top, low = max(r["clients"] for r in rows), min(r["clients"] for r in rows)
    # Round by round: the two servers of one round ran back to back, under the same load.
    ratios = [
        ours["images_per_s"] / theirs["images_per_s"]
        for ours, theirs in zip(cells["tagger", top], cells["peer", top], strict=True)
    ]
    cpu = [
        theirs["server_cpu_ms_per_image"] / ours["server_cpu_ms_per_image"]
        for ours, theirs in zip(cells["tagger", top], cells["peer", top], strict=True)
    ]
    p50s = [r["p50_ms"] for r in cells["tagger", low]]
    peaks = {s.name: s.peak_rss_kb() for s in servers}
    print()
    for s in servers:
        print(
            f"{s.name}: peak RSS {peaks[s.name]:,} kB ({peaks[s.name] * 1024 / 1e6:.0f} MB),"
            f" server and children; torch loaded: {s.torch_loaded()}"
        )
    listed = ", ".join(f"x{r:.2f}" for r in ratios)
    print(f"tagger / peer throughput at {top} clients, by round: {listed} (goal: x3 or more)")
    listed = ", ".join(f"x{r:.2f}" for r in cpu)
    print(f"peer / tagger CPU per image at {top} clients, by round: {listed}")
    listed = ", ".join(f"{p:.0f}" for p in p50s)
    print(f"tagger p50 at {low} client(s), by round: {listed} ms (goal: under 50 ms)")
    return {"ratios": ratios, "cpu_ratios": cpu, "tagger_p50_ms": p50s, "peak_rss_kb": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--images", type=int, default=32, help="distinct 1600x1200 JPEGs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers_up:
        work = Path(tmp)
        photos = make_images(work, args.images, (1600, 1200), "jpg")
        bodies = [multipart(p.read_bytes(), p.name) for p in photos]
        env = os.environ | {"XDG_DATA_HOME": str(work / "data")}
        env |= {"XDG_CONFIG_HOME": str(work / "config")}  # no user settings
        servers = []
        for starter in (start_tagger, start_peer):
            server = starter(work, env)
            servers_up.callback(stop, server)
            servers.append(server)
        for server in servers:
            wait_healthy(server, timeout=300)
        agree, gap = same_answers(servers, bodies)
        print(
            f"{len(bodies)} JPEGs of 1600x1200, {args.seconds:g} s per cell after"
            f" {args.warmup:g} s of warm-up, {os.cpu_count()} CPUs; top-1 agreement between"
            f" the servers {agree}/{len(bodies)} (largest score gap {gap:.3f})\n"
        )
        rows = []
        step = 0
        for _ in range(args.rounds):
            for clients in counts:
                for server in servers if step % 2 else servers[::-1]:
                    rows.append(load(server, bodies, clients, args.warmup, args.seconds))
                step += 1
        summary = report(rows, servers)
        one, five, _ = os.getloadavg()
        print(f"load average at the end (1/5 min, other jobs included): {one:.1f} / {five:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
