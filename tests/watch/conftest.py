"""Fixtures the watch tests share; their helpers live in the test modules they come from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
