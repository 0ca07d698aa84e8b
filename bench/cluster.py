"""Benchmark: `tagger scan --engine ray` against the plain scan, on the same machine and files,
and by the number of nodes in the Ray cluster.

    python bench/cluster.py [--images 96] [--cpus 2] [--nodes 1 2] [--rounds 1]

Makes distinct photo-like JPEGs (bench/run.py's, 1600x1200), then runs the real command in
a child process, each run into a new SQLite database: `tagger scan DIR`, then, for each
node count, a local Ray cluster of that many nodes (`ray.cluster_utils.Cluster`, a head and
workers, `--cpus` each, token authentication on as Ray 2.59+ has it) and
`tagger scan --engine ray --address ... DIR`. The times are the command's whole run, model
loading and connecting to the cluster included, as a user waits for it. Every node here
shares this machine's cores: the difference to the plain scan is Ray's overhead, not what
more machines give (docs/benchmarks.md, "Cluster backfill").
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import SETS, make_images  # bench/run.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
TAGGER = Path(sys.executable).parent / "tagger"


def environment() -> dict[str, str]:
    """The same token-auth settings for head, workers and the driver; offline."""
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def scan(folder: Path, db: Path, env: dict[str, str], *extra: str) -> tuple[float, float]:
    """Seconds one `tagger scan` took, as its caller waits for it, and the CPU seconds of
    the command's own process (with Ray: the driver's share; the nodes are not its own)."""
    started = time.perf_counter()
    cpu = _children_cpu()
    result = subprocess.run(
        [str(TAGGER), "--db", str(db), "scan", *extra, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"tagger scan {' '.join(extra)} failed:\n{result.stderr}")
    print("   ", result.stdout.strip().splitlines()[-1], flush=True)
    return seconds, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs=2, default=[64, 256], metavar=("FEW", "MANY"))
    parser.add_argument("--cpus", type=int, default=2, help="CPUs each Ray node offers")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    env = environment()
    os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PYTHONPATH")})
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        folders = photo_sets(Path(tmp), args.images)
        times = measure(folders, Path(tmp), env, args.nodes, args.cpus, args.rounds)
    report(times, args.images)


def photo_sets(tmp: Path, counts: list[int]) -> dict[int, Path]:
    """A folder of `count` distinct photos for each count (the smaller ones hard links)."""
    _, size, ext = SETS[0]
    many = tmp / f"photos{max(counts)}"
    many.mkdir()
    paths = make_images(many, max(counts), size, ext)
    folders = {max(counts): many}
    for count in counts:
        if count not in folders:
            folders[count] = tmp / f"photos{count}"
            folders[count].mkdir()
            for path in paths[:count]:
                os.link(path, folders[count] / path.name)
    return folders


def measure(
    folders: dict[int, Path], tmp: Path, env: dict[str, str], nodes: list[int], cpus: int,
    rounds: int,
) -> dict[tuple[str, int], list[tuple[float, float]]]:  # fmt: skip
    """Seconds and the command's CPU seconds of each run, by (engine and nodes, photos)."""
    from ray.cluster_utils import Cluster  # after the settings: Ray reads them once

    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    databases = (tmp / f"run{i}.db" for i in range(1_000_000))
    for _ in range(rounds):
        for count, folder in folders.items():
            print(f"plain scan, {count} photos", flush=True)
            times.setdefault(("plain scan", count), []).append(scan(folder, next(databases), env))
        for size in nodes:
            node = {"num_cpus": cpus, "object_store_memory": 200 * 1024 * 1024}
            cluster = Cluster(
                initialize_head=True, head_node_args={**node, "include_dashboard": False}
            )
            try:
                for _ in range(size - 1):
                    cluster.add_node(**node)
                cluster.wait_for_nodes()
                name = f"ray, {size} node{'s' if size > 1 else ''}"
                for count, folder in folders.items():
                    print(f"{name}, {count} photos", flush=True)
                    ray = ("--engine", "ray", "--address", cluster.address)
                    seconds = scan(folder, next(databases), env, *ray)
                    times.setdefault((name, count), []).append(seconds)
            finally:
                cluster.shutdown()
    return times


def report(times: dict[tuple[str, int], list[tuple[float, float]]], counts: list[int]) -> None:
    """Best times, and each run's cost split into a fixed start and a cost per photo."""
    few, many = sorted(counts)
    best = {key: min(values) for key, values in times.items()}

    def per_photo(name: str, column: int) -> float:
        return (best[name, many][column] - best[name, few][column]) / (many - few)

    plain = per_photo("plain scan", 0)
    print(f"\n{os.cpu_count()} CPUs; best of the rounds; the command's whole run")
    print(
        f"| run | {few} photos s | {many} photos s | photos/s ({many}) | fixed s | ms/photo |"
        " overhead ms/photo | command's CPU ms/photo |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in dict.fromkeys(name for name, _ in best):
        wall = per_photo(name, 0)
        fixed = best[name, few][0] - wall * few
        print(
            f"| {name} | {best[name, few][0]:.1f} | {best[name, many][0]:.1f} | "
            f"{many / best[name, many][0]:.1f} | {fixed:.1f} | {wall * 1000:.1f} | "
            f"{(wall - plain) * 1000:+.1f} | {per_photo(name, 1) * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
