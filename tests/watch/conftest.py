"""Fixtures the watch tests share; their helpers live in the test modules they come from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tagger.inference.torch_model import TorchClassifier
from tests.watch.test_daemon import Harness
from tests.watch.test_daemon_process import Watch


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Watch]:
    """A real `tagger watch` process on a temporary folder and database, killed if a test
    leaves it running."""
    watch = Watch(tmp_path)
    yield watch
    if watch.proc is not None and watch.proc.poll() is None:
        watch.proc.kill()
        watch.proc.wait()
    watch.socket.close()


@pytest.fixture
def harness(tmp_path: Path, classifier: TorchClassifier, db_url: str) -> Iterator[Harness]:
    """Daemons in threads on one folder and database; each is stopped, and none may have
    failed, when the test ends."""
    harness = Harness(tmp_path, classifier, db_url)
    yield harness
    for running in harness.running:
        running.stop()
    assert not harness.errors, harness.errors
