"""The JSON API and /predict on a real server in a real daemon, with the real model."""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tagger.config import Settings
from tagger.inference.torch_model import TorchClassifier
from tagger.store.database import Store
from tagger.watch.daemon import Daemon
from tagger.web.run import WebRun
from tagger.web.server import parse_listen
from tests.helpers import PHOTOS, png_declaring

pytestmark = pytest.mark.both_databases  # the daemon and its web API on SQLite and PostgreSQL

CAT = PHOTOS / "coral_cat_720p.jpg"
PARROT = PHOTOS / "coral_parrot.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


@dataclass
class Served:
    client: httpx.Client
    daemon: Daemon
    photos: Path
    inbox: Path

    def upload(self, path: Path, name: str | None = None) -> httpx.Response:
        with path.open("rb") as handle:
            return self.client.post("/api/uploads", files={"file": (name or path.name, handle)})

    def tagged(self, query: str) -> list[dict[str, Any]]:
        images: list[dict[str, Any]] = self.client.get("/api/images", params={"q": query}).json()[
            "images"
        ]
        return images


def serve(tmp_path: Path, db_url: str, classifier: TorchClassifier, **web: Any) -> Iterator[Served]:
    port = free_port()
    settings = Settings(
        db=db_url,
        data_dir=tmp_path / "data",
        batch={"max_wait": 0.2},
        watch={"stability_delay": 0.3, "rescan_interval": 0},
        web={"listen": f"127.0.0.1:{port}", "max_upload_bytes": 2_000_000} | web,
    )
    store = Store(settings.db_url)
    run = WebRun(settings, store, classifier)
    photos = tmp_path / "photos"
    photos.mkdir()
    daemon = Daemon(settings, store, run.classifier, [photos, run.inbox])
    stop, errors = threading.Event(), []

    def main() -> None:
        try:
            daemon.run(stop, on_start=lambda: run.start(daemon, daemon.roots))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name="tagger-test-daemon")
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_for(lambda: daemon.state == "watching" or errors, 60, "the daemon")
        assert not errors, errors
        yield Served(client, daemon, photos, run.inbox)
    finally:
        client.close()
        stop.set()
        thread.join(30)
        run.stop()
        store.close()
    assert not errors, errors


@pytest.fixture
def served(tmp_path: Path, db_url: str, classifier: TorchClassifier) -> Iterator[Served]:
    yield from serve(tmp_path, db_url, classifier)


def test_predict_answers_the_cat_photo_like_the_demos(served: Served) -> None:
    with CAT.open("rb") as handle:
        answer = served.client.post("/predict", files={"file": ("cat.jpg", handle)})
    assert answer.status_code == 200
    top = answer.json()
    assert len(top) == 3
    assert any("cat" in row["label"] or row["label"] == "tabby" for row in top)
    assert [row["rank"] for row in top] == [1, 2, 3]
    assert top[0]["probability"] == pytest.approx(top[0]["score"] * 100, abs=0.01)
    assert top[0]["wnid"].startswith("n") and isinstance(top[0]["class_index"], int)
    assert served.tagged("") == []  # nothing stored


def test_predict_takes_top_k_and_refuses_bad_input_with_a_status(served: Served) -> None:
    post = served.client.post
    with CAT.open("rb") as handle:
        assert len(post("/predict?top_k=5", files={"file": handle}).json()) == 5
    cases = [
        ("/predict?top_k=0", b"x", 400, "top_k"),
        ("/predict", b"shopping list: milk", 415, "not an image"),
        ("/predict", b"", 415, "empty file"),
        ("/predict", png_declaring(60_000, 60_000), 413, "too many pixels"),
        ("/predict", b"\xff\xd8" + b"0" * 2_100_000, 413, "over the limit"),
    ]
    for url, content, status, reason in cases:
        answer = post(url, files={"file": ("x.jpg", content)})
        assert answer.status_code == status, (url, reason, answer.text)
        assert reason in answer.json()["error"]
    no_file = post("/predict", files={"other": ("x.jpg", b"x")})
    assert no_file.status_code == 400 and '"file"' in no_file.json()["error"]
    assert post("/predict", content=b"plain body").status_code == 400


def test_an_upload_is_tagged_stored_and_served(served: Served) -> None:
    answer = served.upload(CAT)
    assert answer.status_code == 201, answer.text
    result = answer.json()["uploads"][0]
    assert result["duplicate"] is False and result["stored_as"] == CAT.name
    assert any("cat" in tag["label"] or tag["label"] == "tabby" for tag in result["tags"])
    sha = result["sha256"]
    assert (served.inbox / CAT.name).read_bytes() == CAT.read_bytes()

    found = wait_for(lambda: served.tagged("label:cat"), what="the upload to be tagged")
    assert [row["sha256"] for row in found] == [sha]
    image = served.client.get(f"/api/images/{sha}").json()
    assert image["paths"][0]["path"] == str(served.inbox / CAT.name)
    assert image["status"] == "tagged" and image["width"] == 1280

    thumb = served.client.get(f"/api/images/{sha}/thumbnail", params={"size": 256})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8" and "immutable" in thumb.headers["cache-control"]
    again = served.client.get(
        f"/api/images/{sha}/thumbnail", headers={"If-None-Match": thumb.headers["etag"]}
    )
    assert again.status_code == 304
    assert served.client.get(f"/api/images/{sha}/thumbnail?size=999").status_code == 400
    original = served.client.get(f"/api/images/{sha}/original")
    assert original.content == CAT.read_bytes()

    labels = served.client.get("/api/labels").json()["labels"]
    assert {"cat": sha}.items() <= {r["label"]: r["cover"] for r in labels}.items()


def test_the_same_photo_again_is_a_duplicate_with_its_stored_tags(served: Served) -> None:
    first = served.upload(CAT).json()["uploads"][0]
    wait_for(lambda: served.tagged("label:cat"), what="the upload to be tagged")
    second = served.upload(CAT, name="again.jpg")
    assert second.status_code == 201
    result = second.json()["uploads"][0]
    assert result["duplicate"] is True and result["sha256"] == first["sha256"]
    assert [t["label"] for t in result["tags"]] == [t["label"] for t in first["tags"]]
    assert sorted(p.name for p in served.inbox.iterdir()) == [CAT.name]


def test_upload_names_are_only_hints_and_rejects_leave_nothing(served: Served) -> None:
    names = []
    for hint in ("../../etc/evil.jpg", "..\\evil.jpg", ".hidden", "evil"):
        with PARROT.open("rb") as handle:
            data = handle.read() + hint.encode()  # new content each time: no duplicates
        answer = served.client.post("/api/uploads", files={"file": (hint, data)})
        assert answer.status_code == 201, answer.text
        names.append(answer.json()["uploads"][0]["stored_as"])
    assert names == ["evil.jpg", "evil (2).jpg", "hidden.jpg", "evil (3).jpg"]
    for content in (b"not a photo", png_declaring(60_000, 60_000), b"\xff\xd8" + b"0" * 2_100_000):
        refused = served.client.post("/api/uploads", files={"file": ("bad.jpg", content)})
        assert refused.status_code in (413, 415) and refused.json()["error"]
    assert sorted(p.name for p in served.inbox.iterdir()) == sorted(names)


def test_queries_and_ids_are_checked(served: Served) -> None:
    bad = served.client.get("/api/images", params={"q": "score:x"})
    assert bad.status_code == 400 and "column" in bad.json()["error"]
    assert served.client.get("/api/images", params={"q": 'label:"cat'}).status_code == 400
    assert served.client.get("/api/images/not-a-hash").status_code == 404
    assert served.client.get("/api/images/" + "a" * 64).status_code == 404
    assert served.client.get("/api/images/..%2F..%2Fetc%2Fpasswd/original").status_code == 404
    assert served.client.get("/api/images?limit=0").status_code == 400
    assert served.client.get("/no/such/page").status_code == 404


def test_a_file_turned_into_a_link_out_of_the_folders_is_never_served(
    served: Served, tmp_path: Path
) -> None:
    photo = served.photos / "cat.jpg"
    shutil.copy(CAT, photo)
    rows = wait_for(lambda: served.tagged("label:cat"), what="the photo to be tagged")
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"private")
    photo.unlink()
    photo.symlink_to(secret)
    sha = rows[0]["sha256"]
    assert served.client.get(f"/api/images/{sha}/original").status_code == 404


def test_cross_site_posts_are_refused(served: Served) -> None:
    def post(headers: dict[str, str]) -> int:
        with CAT.open("rb") as handle:
            return served.client.post(
                "/predict", files={"file": handle}, headers=headers
            ).status_code

    assert post({"Origin": "http://evil.example"}) == 403
    assert post({"Sec-Fetch-Site": "cross-site"}) == 403
    host = served.client.base_url.netloc.decode()
    assert post({"Origin": f"http://{host}"}) == 200


def test_status_health_and_metrics(served: Served, database: str) -> None:
    if database == "postgresql":  # every daemon on a shared database, by its heartbeat
        wait_for(lambda: served.client.get("/api/status").json()["daemons"], 30, "a heartbeat")
        (listed,) = served.client.get("/api/status").json()["daemons"]
        assert str(served.inbox) in listed["roots"] and listed["heartbeat_age"] < 60
        assert "Daemons writing to this database" in served.client.get("/status").text
    status = served.client.get("/api/status").json()
    assert status["daemon"]["state"] == "watching" and status["healthy"] is True
    assert status["model"]["name"] == "efficientnet_lite0"
    assert str(served.inbox) in status["daemon"]["observers"]
    assert served.client.get("/healthz").json() == {"healthy": True, "state": "watching"}
    with CAT.open("rb") as handle:
        served.client.post("/predict", files={"file": handle})
    metrics = served.client.get("/metrics").text
    assert 'tagger_batch_size_count{source="web"} 1.0' in metrics
    assert "tagger_files_total" in metrics and "tagger_queue_depth" in metrics


def test_pages_escape_names_and_forbid_inline_script(served: Served) -> None:
    name = "<img src=x onerror=alert(1)>.jpg"
    sha = served.upload(CAT, name=name).json()["uploads"][0]["sha256"]
    wait_for(lambda: served.tagged("label:cat"), what="the upload to be tagged")
    page = served.client.get(f"/photos/{sha}", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page.text
    assert "<img src=x" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in ("/", "/photos", "/photos?q=label:cat", "/labels", "/labels?tree=1", "/status"):
        assert served.client.get(path).status_code == 200, path
    error = served.client.get("/photos/" + "b" * 64, headers={"Accept": "text/html"})
    assert error.status_code == 404 and "<html" in error.text


@pytest.fixture
def locked(tmp_path: Path, db_url: str, classifier: TorchClassifier) -> Iterator[Served]:
    yield from serve(tmp_path, db_url, classifier, password="s3cret pass", token="t0ken")


def test_a_password_or_token_guards_everything_but_health(locked: Served) -> None:
    get = locked.client.get
    refused = get("/api/status")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert get("/", headers={"Accept": "text/html"}).status_code == 401
    basic = base64.b64encode(b"anyone:s3cret pass").decode()
    assert get("/api/status", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    wrong = base64.b64encode(b"anyone:guess").decode()
    assert get("/api/status", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert get("/api/status", headers={"Authorization": "Bearer t0ken"}).status_code == 200
    assert get("/api/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert get("/healthz").status_code == 200


def test_listen_addresses() -> None:
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_listen("eighty")


def test_requests_for_other_host_names_are_refused(served: Served) -> None:
    """On loopback, a page reached through DNS rebinding carries a foreign Host: refused."""
    status = served.client.get("/api/status", headers={"Host": "attacker.example:8080"})
    assert status.status_code == 400 and "web.allowed_hosts" in status.json()["error"]
    assert served.client.get("/api/status", headers={"Host": "localhost:1"}).status_code == 200


def test_hostile_inputs_get_one_line_answers(served: Served) -> None:
    bomb = served.client.post("/predict", files={"file": ("x.png", png_declaring(8000, 8000))})
    assert bomb.status_code == 413 and "too many pixels" in bomb.json()["error"]
    for query in ("added:-99999999999d..", " ".join(["label:cat"] * 65)):
        answer = served.client.get("/api/images", params={"q": query})
        assert answer.status_code == 400 and "\n" not in answer.json()["error"]
    long_name = "é" * 200 + ".jpg"
    stored = served.upload(CAT, name=long_name).json()["uploads"][0]["stored_as"]
    assert stored.endswith(".jpg") and len(stored.encode()) <= 200
    page = served.client.get("//evil.example/x", headers={"Accept": "text/html"})
    assert page.status_code == 404 and 'href="//evil' not in page.text
    assert "content-security-policy" in page.headers


def test_silent_connections_are_closed(
    tmp_path: Path, db_url: str, classifier: TorchClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tagger.web.server.FIRST_REQUEST_S", 0.5)
    for served in serve(tmp_path, db_url, classifier):
        port = served.client.base_url.port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            assert idle.recv(1) == b""  # closed by the server, no request sent
        assert served.client.get("/healthz").status_code == 200


def test_similar_photos_in_the_api_and_on_the_photo_page(served: Served, tmp_path: Path) -> None:
    from PIL import Image

    small = tmp_path / "cat <small>.jpg"
    with Image.open(CAT) as cat:
        cat.resize((cat.width // 3, cat.height // 3)).save(small, quality=60)
    shas = {}
    for photo in (CAT, small, PHOTOS / "coral_hot_dog.jpg"):
        answer = served.upload(photo)
        assert answer.status_code == 201, answer.text
        shas[photo.name] = answer.json()["uploads"][0]["sha256"]
    wait_for(lambda: len(served.tagged("")) == 3, what="the uploads to be tagged")
    cat_sha = shas[CAT.name]
    answer = served.client.get(f"/api/images/{cat_sha}/similar")
    assert answer.status_code == 200, answer.text
    rows = answer.json()["similar"]
    assert [row["sha256"] for row in rows] == [shas[small.name], shas["coral_hot_dog.jpg"]]
    assert rows[0]["similarity"] > 0.85 > rows[1]["similarity"]
    limited = served.client.get(f"/api/images/{cat_sha}/similar", params={"limit": 1}).json()
    assert len(limited["similar"]) == 1
    too_many = served.client.get(f"/api/images/{cat_sha}/similar", params={"limit": 101})
    assert too_many.status_code == 400 and "limit" in too_many.json()["error"]
    odd = served.client.get(f"/api/images/{cat_sha}/similar", params={"min_similarity": "x"})
    assert odd.status_code == 400
    unknown = served.client.get(f"/api/images/{'0' * 64}/similar")
    assert unknown.status_code == 404 and "error" in unknown.json()
    page = served.client.get(f"/photos/{cat_sha}").text
    assert "Similar photos" in page and f"/photos/{shas[small.name]}" in page
    assert "cat <small>" not in page and "cat &lt;small&gt;" in page


def test_photos_marked_on_the_page_train_a_label_of_ones_own(served: Served) -> None:
    geysers = sorted(PHOTOS.glob("orientation_*.jpg"))
    shas = {}
    calibration = PHOTOS.parent.parent / "tagger" / "data" / "calibration"
    others = [calibration / f"coral_{name}.jpg" for name in ("bird", "owl", "face", "pets")]
    for photo in [
        *geysers,
        CAT,
        PHOTOS / "coral_hot_dog.jpg",
        PHOTOS / "coral_parrot.jpg",
        *others,
    ]:
        answer = served.upload(photo)
        assert answer.status_code == 201, answer.text
        shas[photo.name] = answer.json()["uploads"][0]["sha256"]
    wait_for(lambda: len(served.tagged("")) == len(shas), what="the uploads to be tagged")

    def mark(photo: Path, example: bool = True) -> httpx.Response:
        return served.client.post(
            f"/api/images/{shas[photo.name]}/labels",
            json={"name": "old faithful", "example": example},
        )

    for photo in geysers[:4]:
        answer = mark(photo)
        assert answer.status_code == 200, answer.text
    assert "4 of 5 examples so far" in answer.json()["message"]
    assert served.tagged('label:"old faithful"') == []
    answer = mark(geysers[4])
    assert "retrained on 5 examples" in answer.json().get("message", ""), answer.text
    found = {row["sha256"] for row in served.tagged('label:"old faithful"')}
    assert shas[geysers[5].name] in found and shas[CAT.name] not in found
    # "Wrong" on the page: a negative example, and the label retrained without it
    page = served.client.get(f"/photos/{shas[geysers[5].name]}").text
    assert "Wrong" in page and "yours" in page
    said = served.client.post(
        f"/photos/{shas[geysers[5].name]}/labels",
        data={"name": "old faithful", "verdict": "no"},
        headers={"Origin": str(served.client.base_url).rstrip("/")},
    )
    assert said.status_code == 303 and "retrained" in said.headers["location"]
    found = {row["sha256"] for row in served.tagged('label:"old faithful"')}
    assert shas[geysers[5].name] not in found and shas[geysers[0].name] in found
    assert mark(CAT).status_code == 200
    refused = served.client.post(
        f"/api/images/{shas[CAT.name]}/labels", json={"name": "hotdog", "example": True}
    )
    assert refused.status_code == 400 and "label of the model" in refused.json()["error"]
    assert (
        served.client.post(f"/api/images/{shas[CAT.name]}/labels", content=b"x").status_code == 400
    )
