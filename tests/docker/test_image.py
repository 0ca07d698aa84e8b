"""The Docker image, built for real and run as users run it: the demos' one command, a
read-only root, a NAS user id, and no network at all for the watch-only use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import PHOTOS, ROOT

# Debian's docker client first: it builds with BuildKit without a buildx plugin.
DOCKER = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
BASE = "tagger-base:bookworm"  # docker/make-base.sh; .ci/run makes it


def docker(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    env = os.environ | {"DOCKER_BUILDKIT": "1"}
    done = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """Built once for this module, from the working tree, on the base image made here."""
    if DOCKER is None or docker("info", check=False, timeout=30).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("no Docker engine; .ci/run starts one")
        pytest.skip("no Docker engine (start dockerd; see .ci/run)")
    have_base = docker("image", "inspect", BASE, check=False, timeout=30).returncode == 0
    base = os.environ.get("TAGGER_PYTHON_IMAGE") or (
        BASE if have_base else "python:3.11-slim-bookworm"
    )
    tag = f"tagger-test:{uuid.uuid4().hex[:8]}"
    docker("build", "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag, str(ROOT), timeout=1200)
    yield tag
    docker("rmi", "-f", tag, check=False)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    photos, data = tmp_path / "photos", tmp_path / "data"
    photos.mkdir()
    data.mkdir(mode=0o777)
    data.chmod(0o777)  # the container runs as a NAS user, not as us
    for photo in ("coral_parrot.jpg", "coral_hot_dog.jpg", "coral_cat_720p.jpg"):
        shutil.copy(PHOTOS / photo, photos / photo)
    return photos, data


def run(image: str, name: str, photos: Path, data: Path, *options: str) -> None:
    docker(
        "run", "-d", "--name", name, "--read-only", "--user", "1026:100",
        "-v", f"{photos}:/app/uploads:ro", "-v", f"{data}:/data", *options, image,
    )  # fmt: skip


def wait_for(name: str, *command: str, timeout: float = 60) -> str:
    """The output of `docker exec NAME tagger COMMAND` once it exits 0."""
    deadline = time.monotonic() + timeout
    while True:
        done = docker("exec", name, "tagger", *command, check=False, timeout=60)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout
        if time.monotonic() > deadline:
            logs = docker("logs", name, check=False).stderr[-2000:]
            pytest.fail(f"tagger {' '.join(command)} never answered: {done.stderr}\n{logs}")
        time.sleep(0.5)


def stop(name: str) -> int:
    docker("stop", "--time", "10", name, timeout=60)
    code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout)
    docker("rm", "-f", name, check=False)
    return code


def test_the_image_tags_the_folder_serves_predict_and_stops_cleanly(
    image: str, folders: tuple[Path, Path]
) -> None:
    photos, data = folders
    name = f"tagger-test-{uuid.uuid4().hex[:8]}"
    run(image, name, photos, data, "-p", "127.0.0.1::8080", "-e", "TAGGER_WEB__PASSWORD=s3cret")
    try:
        found = wait_for(name, "query", "--label", "macaw", "--format", "paths")
        assert found.strip() == "/app/uploads/coral_parrot.jpg"
        assert "tagger watch is running" in wait_for(name, "status")
        port = docker("port", name, "8080/tcp").stdout.split(":")[-1].strip()
        url = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{url}/predict").status_code == 401  # the password is asked
        with (PHOTOS / "coral_hot_dog.jpg").open("rb") as handle:
            answer = httpx.post(
                f"{url}/predict", files={"file": handle}, auth=("", "s3cret"), timeout=60
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["label"] == "hotdog"
        with (PHOTOS / "orientation_Landscape_1.jpg").open("rb") as handle:
            upload = httpx.post(
                f"{url}/api/uploads",
                files={"file": ("mine.jpg", handle)},
                auth=("", "s3cret"),
                timeout=60,
            )
        assert upload.status_code == 201, upload.text
        assert [p.name for p in (data / "inbox").iterdir()] == ["mine.jpg"], upload.text
        assert docker("exec", name, "python", "-c", "import torch", check=False).returncode == 1
    finally:
        assert stop(name) == 0  # SIGTERM: drains and exits 0, not killed after the grace time
    assert (data / "tagger.db").is_file()  # the database is in the volume, kept


def test_watch_only_runs_with_no_network_at_all(image: str, folders: tuple[Path, Path]) -> None:
    photos, data = folders
    name = f"tagger-test-{uuid.uuid4().hex[:8]}"
    run(image, name, photos, data, "--network", "none", "-e", "TAGGER_WEB__LISTEN=")
    try:
        found = wait_for(name, "query", "--label", "hotdog", "--format", "paths")
        assert found.strip() == "/app/uploads/coral_hot_dog.jpg"
        assert "tagger watch is running" in wait_for(name, "status")
        probe = "import socket; socket.create_connection(('127.0.0.1', 8080), timeout=2)"
        refused = docker("exec", name, "python", "-c", probe, check=False)
        assert "ConnectionRefusedError" in refused.stderr  # no web server: nothing listens
    finally:
        assert stop(name) == 0


def test_docker_stop_right_after_start_is_heard(image: str, folders: tuple[Path, Path]) -> None:
    """tagger is PID 1, which ignores a signal it has no handler for: without one from its
    first moment, this stop would end in SIGKILL after the grace time (exit 137)."""
    photos, data = folders
    name = f"tagger-test-{uuid.uuid4().hex[:8]}"
    run(image, name, photos, data, "--network", "none", "-e", "TAGGER_WEB__LISTEN=")
    assert stop(name) == 0


def test_the_image_is_small_and_has_no_package_manager(image: str) -> None:
    """The size is a feature the README states (the demos' image is 489 MB)."""
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    assert size <= 300_000_000, f"the image grew to {size / 1e6:.0f} MB"
    look = "for c in apt-get dpkg perl cat; do command -v $c; done"
    probe = docker("run", "--rm", "--entrypoint", "sh", image, "-c", look, check=False)
    assert probe.stdout.split() == ["/usr/bin/cat"]  # coreutils stay, for docker exec
    assert "Usage: tagger" in docker("run", "--rm", image, "--help").stdout


def test_docker_compose_runs_the_nas_setup(image: str, folders: tuple[Path, Path]) -> None:
    """docker-compose.yml as a NAS user runs it: settings from the environment (.env),
    photos read-only, the database in a named volume, a password on the web page."""
    compose = shutil.which("docker-compose", path="/usr/bin") or shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("no docker-compose; .ci/run installs Debian's")
        pytest.skip("no docker-compose")
    photos, _ = folders
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project = f"tagger-test-{uuid.uuid4().hex[:8]}"
    env = os.environ | {
        "TAGGER_IMAGE": image,
        "PHOTOS": str(photos),
        "TAGGER_PASSWORD": "s3cret",
        "PORT": f"127.0.0.1:{port}",
    }

    def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
        command = [compose, "-p", project, "-f", str(ROOT / "docker-compose.yml"), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    started = run_compose("up", "-d", "--no-build")
    assert started.returncode == 0, started.stderr
    try:
        name = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}")
        container = name.stdout.strip()
        found = wait_for(container, "query", "--label", "macaw", "--format", "paths")
        assert found.strip() == "/app/uploads/coral_parrot.jpg"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 401
        page = httpx.get(f"http://127.0.0.1:{port}/", auth=("", "s3cret"), timeout=30)
        assert page.status_code == 200
        assert run_compose("stop").returncode == 0
        code = docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip()
        assert code == "0"
    finally:
        run_compose("down", "-v")
