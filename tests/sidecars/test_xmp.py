"""XMP sidecars, read back with exiftool as other photo apps would read them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger.config import Settings
from tagger.inference.torch_model import TorchClassifier
from tagger.sidecars.keeper import Sidecars
from tagger.sidecars.xmp import SidecarError, merged
from tagger.store.database import Store
from tagger.watch.daemon import Daemon
from tests.helpers import PHOTOS, Result

CAT = PHOTOS / "coral_cat_720p.jpg"
HOTDOG = PHOTOS / "coral_hot_dog.jpg"
DARKTABLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:darktable="http://darktable.sf.net/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    darktable:xmp_version="5" xmp:Rating="4">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
   <darktable:history>
    <rdf:Seq><rdf:li darktable:operation="exposure"/></rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def exiftool(sidecar: Path) -> dict[str, Any]:
    if shutil.which("exiftool") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("exiftool is missing: .ci/run installs libimage-exiftool-perl")
        pytest.skip("exiftool not installed (apt-get install libimage-exiftool-perl)")
    done = subprocess.run(
        ["exiftool", "-j", "-a", "-G1", "-struct", str(sidecar)],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(done.stdout)[0]
    return found


def listed(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(CAT, folder / "cat.jpg")
    shutil.copy(HOTDOG, folder / "lunch.jpg")
    return folder


def test_sidecars_beside_the_photos_carry_all_three_fields(
    tagger: Callable[..., Result], photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGGER_XMP__WRITE", "beside")
    assert tagger("scan", str(photos)).code == 0
    fields = exiftool(photos / "cat.jpg.xmp")
    subject = listed(fields["XMP-dc:Subject"])
    hierarchical = listed(fields["XMP-lr:HierarchicalSubject"])
    tags = listed(fields["XMP-digiKam:TagsList"])
    assert "cat" in subject and "animal" in subject
    assert any(
        h.startswith("tagger|") and h.endswith("|cat|domestic cat|Egyptian cat")
        for h in hierarchical
    )
    assert {t.replace("/", "|") for t in tags} == set(hierarchical)
    assert "hotdog" in listed(exiftool(photos / "lunch.jpg.xmp")["XMP-dc:Subject"])


def test_keywords_in_chinese(
    tagger: Callable[..., Result], photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGGER_XMP__WRITE", "beside")
    monkeypatch.setenv("TAGGER_XMP__LANGUAGE", "zh")
    assert tagger("scan", str(photos)).code == 0
    fields = exiftool(photos / "cat.jpg.xmp")
    assert "猫" in listed(fields["XMP-dc:Subject"])
    assert any("|动物|" in h for h in listed(fields["XMP-lr:HierarchicalSubject"]))


def test_another_apps_sidecar_is_merged_and_a_malformed_one_left_alone(
    tagger: Callable[..., Result], photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (photos / "cat.jpg.xmp").write_bytes(DARKTABLE)
    (photos / "lunch.jpg.xmp").write_bytes(b"<x:xmpmeta><rdf:RDF>not closed")
    assert tagger("scan", str(photos)).code == 0
    result = tagger("xmp", "--mode", "beside")
    assert result.code == 1
    assert "lunch.jpg.xmp: not well-formed XML" in result.err
    assert "Wrote 1 sidecars" in result.out
    assert (photos / "lunch.jpg.xmp").read_bytes() == b"<x:xmpmeta><rdf:RDF>not closed"
    fields = exiftool(photos / "cat.jpg.xmp")
    assert {"holiday", "cat"} <= set(listed(fields["XMP-dc:Subject"]))
    assert fields["XMP-darktable:Xmp_version"] == 5
    assert fields["XMP-xmp:Rating"] == 4
    assert 'darktable:operation="exposure"' in (photos / "cat.jpg.xmp").read_text()


def test_a_rewrite_replaces_only_taggers_own_keywords() -> None:
    first = merged(DARKTABLE, [["animal", "cat"], ["food"]])
    second = merged(first, [["food", "hotdog"]])
    text = second.decode()
    assert "holiday" in text and "hotdog" in text and "tagger|food|hotdog" in text
    assert "tagger|animal|cat" not in text and ">cat<" not in text and ">animal<" not in text
    assert text.count("darktable:history") == 2  # its open and close tags, untouched
    with pytest.raises(SidecarError):
        merged(b"<html><body>not xmp</body></html>", [["cat"]])


def test_mirror_mode_writes_nothing_into_the_photo_folders(
    tagger: Callable[..., Result], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "sidecars"
    monkeypatch.setenv("TAGGER_XMP__WRITE", "mirror")
    monkeypatch.setenv("TAGGER_XMP__DIR", str(mirror))
    before = sorted(photos.iterdir())
    photos.chmod(0o555)
    try:
        assert tagger("scan", str(photos)).code == 0
    finally:
        photos.chmod(0o755)
    assert sorted(photos.iterdir()) == before
    sidecar = mirror / str(photos / "cat.jpg").lstrip("/")
    assert "cat" in listed(exiftool(sidecar.with_name("cat.jpg.xmp"))["XMP-dc:Subject"])


@pytest.fixture
def watching(
    tmp_path: Path, photos: Path, classifier: TorchClassifier
) -> Iterator[tuple[Path, Path]]:
    """A daemon in mirror mode on `photos`: (the photo folder, the mirror root)."""
    mirror = tmp_path / "mirror"
    settings = Settings(
        db=str(tmp_path / "t.db"),
        data_dir=tmp_path / "data",
        batch={"max_wait": 0.2},
        watch={"stability_delay": 0.3, "rescan_interval": 0},
        xmp={"write": "mirror", "dir": mirror},
    )
    store = Store(settings.db_url)
    sidecars = Sidecars(settings, store)
    daemon = Daemon(settings, store, classifier, [photos], on_commit=sidecars.committed)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), name="tagger-test-daemon")
    thread.start()
    try:
        yield photos, mirror
    finally:
        stop.set()
        thread.join(30)
        sidecars.close()
        store.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_daemon_keeps_mirror_sidecars_in_step(watching: tuple[Path, Path]) -> None:
    photos, mirror = watching

    def sidecar(path: Path) -> Path:
        return mirror / (str(path).lstrip("/") + ".xmp")

    wait_for(lambda: sidecar(photos / "cat.jpg").exists(), "the first sidecars")
    shutil.copy(CAT, photos / "new cat.jpg")
    wait_for(lambda: sidecar(photos / "new cat.jpg").exists(), "a new photo's sidecar")
    (photos / "cat.jpg").rename(photos / "renamed.jpg")
    wait_for(lambda: sidecar(photos / "renamed.jpg").exists(), "the sidecar to follow a rename")
    assert not sidecar(photos / "cat.jpg").exists()
    (photos / "lunch.jpg").unlink()
    wait_for(lambda: not sidecar(photos / "lunch.jpg").exists(), "a deleted photo's sidecar to go")


def test_planted_links_and_fifos_are_never_followed(
    tmp_path: Path, photos: Path, tagger: Callable[..., Result]
) -> None:
    assert tagger("scan", str(photos)).code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (photos / "cat.jpg.xmp").symlink_to(victim)
    os.mkfifo(photos / "lunch.jpg.xmp")
    result = tagger("xmp", "--mode", "beside")
    assert result.code == 1
    assert "cat.jpg.xmp: a symlink, not followed" in result.err
    assert "lunch.jpg.xmp: not a regular file" in result.err
    assert victim.read_text() == "precious"
    assert not [p for p in photos.iterdir() if p.name.endswith(".tmp")]


def test_a_mirror_sidecar_never_leaves_the_mirror(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "t.db"), data_dir=tmp_path, xmp={"write": "mirror"})
    store = Store(settings.db_url)
    sidecars = Sidecars(settings, store)
    escaped = sidecars.path_for("/tmp/../../../etc/passwd")
    assert escaped == tmp_path / "xmp" / "etc" / "passwd.xmp"
    assert sidecars.path_for("/../..").parent == tmp_path / "xmp"
    store.close()
