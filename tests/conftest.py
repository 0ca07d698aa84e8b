from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tagger.cli.main import main
from tagger.inference.torch_model import TorchClassifier
from tests.helpers import PHOTOS, Result
from tests.postgres import Cluster, binaries

DATABASES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_databases: run each test of the module on SQLite and on PostgreSQL"
    )
    config.addinivalue_line("markers", "sqlite_only: SQLite files, WAL, file locks: no PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The modules marked `both_databases` run on both: `db_url` is parametrised here, the
    one place, rather than in each test."""
    both = metafunc.definition.get_closest_marker("both_databases") is not None
    only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if "db_url" in metafunc.fixturenames and both and not only:
        metafunc.parametrize("database", DATABASES, indirect=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the session (initdb + pg_ctl, a socket in a temp
    folder). Without the server's binaries the tests that need it are skipped, but not in
    CI (`CI=true`), where they fail: there `.ci/run` installs them."""
    found = binaries()
    if found is None:
        reason = "PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = Cluster(found)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on: "sqlite" unless `both_databases` parametrised it."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_url(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of the test's own new database: a file in tmp_path, or a new PostgreSQL
    database on the session's cluster (dropped after the test)."""
    if database == "sqlite":
        yield f"sqlite:///{tmp_path / 'tagger.db'}"
        return
    cluster: Cluster = request.getfixturevalue("postgres")
    url = cluster.new_database()
    yield url
    cluster.drop_database(url)


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
def tagger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str
) -> Callable[..., Result]:
    """Run the real `tagger` entry point in-process on the test's database (`db_url`)."""
    db = tmp_path / "tagger.db" if db_url.startswith("sqlite") else db_url

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
