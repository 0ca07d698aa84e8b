"""`tagger scan --engine ray` on a real two-node Ray cluster on this machine (a head and a
worker, each with 2 CPUs), against a local scan of the same files."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger.config import load_settings
from tagger.pipeline.files import PhotoFilter, walk_and_sweep
from tagger.records import Outcome
from tagger.store.database import Store
from tests.helpers import ROOT, Result, sql

pytestmark = pytest.mark.both_databases

# Ray 2.59+ turns token authentication on for local clusters: head, worker and driver read
# the same mode and token from the environment, and Ray reads it once, when it is imported,
# so it is set before. No usage stats: the cluster stays offline.
os.environ.update(
    {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
)
try:
    from ray.cluster_utils import Cluster
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("ray is not installed (pip install 'tagger[ray]')", allow_module_level=True)

# The workers import this checkout's tagger, as the driver does.
_PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head and one worker node, 2 CPUs each; its address."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _PYTHONPATH
    small = {"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    try:
        cluster.add_node(**small)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def tags(url: str) -> dict[str, list[tuple[str, float]]]:
    """Every file's stored tags, by file name: (label, score), best first."""
    rows = sql(
        url,
        "SELECT f.path, t.label, t.score FROM files f JOIN tags t ON t.image_id = f.image_id"
        " ORDER BY f.path, t.rank, t.label",
    )
    found: dict[str, list[tuple[str, float]]] = {}
    for path, label, score in rows:
        found.setdefault(Path(path).name, []).append((label, score))
    return found


def images_of(url: str) -> dict[str, int]:
    """Which image each file is linked to, by file name (dedup: copies share one)."""
    return {Path(path).name: image for path, image in sql(url, "SELECT path, image_id FROM files")}


def broken(url: str) -> list[tuple[Any, ...]]:
    """The not-a-photo file's row: its path, its own error and its content's."""
    return sql(
        url,
        "SELECT f.path, f.error, i.error FROM files f"
        " LEFT JOIN images i ON i.id = f.image_id WHERE f.path LIKE '%broken.jpg'",
    )


def assert_same_tags(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got.keys() == expected.keys()
    for name, labels in expected.items():
        assert [label for label, _ in got[name]] == [label for label, _ in labels], name
        for (_, score), (_, wanted) in zip(got[name], labels, strict=True):
            assert score == pytest.approx(wanted, abs=1e-5), name


def test_a_backfill_stores_what_a_local_scan_stores(
    ray_cluster: str,
    photo_dir: Path,
    tmp_path: Path,
    db_url: str,
    tagger: Callable[..., Result],
) -> None:
    shutil.copy(photo_dir / "coral_cat_720p.jpg", photo_dir / "copy of cat.jpg")
    (photo_dir / "broken.jpg").write_bytes(b"not a photo")
    local_db = f"sqlite:///{tmp_path / 'local.db'}"
    local = tagger("--db", str(tmp_path / "local.db"), "scan", str(photo_dir))
    assert local.code == 0, local.err

    result = tagger("scan", "--engine", "ray", "--address", ray_cluster, str(photo_dir))

    assert result.code == 0, result.err
    count = len(list(photo_dir.iterdir()))
    assert f"{count} files: {count - 2} new, 1 duplicate content, 0 unchanged, 1 failed" in (
        result.out
    )
    assert_same_tags(tags(db_url), tags(local_db))
    linked = images_of(db_url)
    assert linked["copy of cat.jpg"] == linked["coral_cat_720p.jpg"]
    assert len(set(linked.values())) == len(linked) - 1
    errors, local_errors = broken(db_url), broken(local_db)
    assert errors == local_errors and errors[0][1:] != (None, None)


def test_an_interrupted_backfill_resumes_with_what_is_missing(
    ray_cluster: str, photo_dir: Path, db_url: str
) -> None:
    from tagger.pipeline.cluster import Backfill
    from tagger.service import load_classifier

    settings = load_settings(db=db_url, batch={"size": 2})
    store = Store(settings.db_url, create=True)
    classifier = load_classifier(settings)
    photos = list(walk_and_sweep([photo_dir], PhotoFilter(settings.scan), True))
    stop = threading.Event()
    tagged: list[str] = []

    def kill_after_three(path: str, outcome: Outcome) -> None:
        if outcome is Outcome.NEW:
            tagged.append(path)
            if len(tagged) == 3:
                stop.set()

    load = functools.partial(load_classifier, settings)  # what each actor runs, once
    try:
        first = Backfill(
            settings, store, classifier, load, kill_after_three, address=ray_cluster
        ).run(photos, stop)
        second = Backfill(settings, store, classifier, load, address=ray_cluster).run(photos)
    finally:
        store.close()
    total = len(list(photo_dir.iterdir()))
    assert first.counts[Outcome.NEW] == 3
    assert second.counts[Outcome.UNCHANGED] == 3
    assert second.counts[Outcome.NEW] == total - 3
    assert len(tags(db_url)) == total


def test_an_actor_loads_the_shipped_artefact_without_torch(ray_cluster: str) -> None:
    import ray

    from tagger.service import load_classifier

    settings = load_settings()
    local = load_classifier(settings)

    @ray.remote(num_cpus=1)
    def loaded(load: Callable[[], Any]) -> tuple[str, Any, bool]:
        import sys

        classifier = load()
        return type(classifier).__name__, classifier.id, "torch" in sys.modules

    ray.init(address=ray_cluster, include_dashboard=False, log_to_driver=False)
    try:
        name, model, torch = ray.get(loaded.remote(functools.partial(load_classifier, settings)))
    finally:
        ray.shutdown()
    assert (name, model, torch) == (type(local).__name__, local.id, False)
