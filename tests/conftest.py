from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tagger.cli.main import main
from tagger.inference.torch_model import TorchClassifier
from tests.helpers import PHOTOS, Result


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a tagger thread running (as watchdog's own tests do)."""
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("tagger")]
        if not alive:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running: {alive}")


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artefact cache for the session: each runtime and precision is exported once."""
    return tmp_path_factory.mktemp("artefacts")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, artefacts: Path) -> None:
    """No user config, env or data directory leaks into a test; exported models are shared."""
    for name in list(__import__("os").environ):
        if name.startswith("TAGGER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    data_dir = tmp_path / "xdg-data" / "tagger"
    data_dir.mkdir(parents=True)
    (data_dir / "artefacts").symlink_to(artefacts, target_is_directory=True)


@pytest.fixture(scope="session")
def classifier() -> TorchClassifier:
    """The real default model with its bundled weights."""
    return TorchClassifier.load("efficientnet_lite0", Path("/nonexistent"))


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in PHOTOS.glob("*.jpg"):
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.fixture
def tagger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., Result]:
    """Run the real `tagger` entry point in-process on a database in tmp_path."""
    db = tmp_path / "tagger.db"

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(["--db", str(db), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
