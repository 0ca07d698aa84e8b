"""The periodic rescan: cheap on an unchanged library, and still the net under the observer."""

from __future__ import annotations

import logging
import shutil

import pytest

from tests.watch.test_daemon import CAT, HOTDOG, PARROT, Harness, wait_for

pytestmark = pytest.mark.both_databases

# A polling observer that never gets round to looking: whatever happens, only a rescan sees it.
BLIND = {"observer": "polling", "poll_interval": 3600}


def rescans(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rescanned ")]


def test_a_rescan_of_an_unchanged_folder_sends_no_file_to_the_pipeline(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    (harness.uploads / "2024").mkdir()
    shutil.copy(CAT, harness.uploads / "2024" / "cat.jpg")
    shutil.copy(PARROT, harness.uploads / "parrot.jpg")
    first = harness.start(**BLIND)  # tagged by the start-up reconcile (once settled)
    harness.wait_tagged(harness.uploads / "2024" / "cat.jpg")
    harness.wait_tagged(harness.uploads / "parrot.jpg")
    first.stop()
    assert harness.model.images == 2
    caplog.clear()
    caplog.set_level(logging.INFO, logger="tagger.watch.daemon")
    harness.start(**BLIND, rescan_interval=0.2)
    wait_for(lambda: len(rescans(caplog)) >= 3, what="three rescans")
    assert all(": 2 files, 2 unchanged by size and mtime" in line for line in rescans(caplog))
    # The pipeline reports each file it looks at ("unchanged PATH"): it was given none.
    looked_at = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unchanged")]
    assert looked_at == []
    assert harness.model.images == 2


def test_a_rescan_finds_a_new_file_a_deleted_one_and_one_rewritten_in_place(
    harness: Harness,
) -> None:
    shutil.copy(CAT, harness.uploads / "stays.jpg")
    shutil.copy(PARROT, harness.uploads / "deleted.jpg")
    shutil.copy(CAT, harness.uploads / "rewritten.jpg")
    harness.start(**BLIND, rescan_interval=0.3)
    harness.wait_tagged(harness.uploads / "rewritten.jpg")

    shutil.copy(HOTDOG, harness.uploads / "new.jpg")
    (harness.uploads / "deleted.jpg").unlink()
    with (harness.uploads / "rewritten.jpg").open("wb") as out:  # in place: no folder change
        out.write(HOTDOG.read_bytes())

    harness.wait_tagged(harness.uploads / "new.jpg", "hotdog")
    harness.wait_tagged(harness.uploads / "rewritten.jpg", "hotdog")
    wait_for(
        lambda: (
            harness.rows(
                "select missing_since is not null from files where path = ?",
                str(harness.uploads / "deleted.jpg"),
            )
            == [(1,)]
        ),
        what="deleted.jpg to be marked missing",
    )
    assert harness.top1(harness.uploads / "stays.jpg") is not None
    assert harness.rows("select count(*) from files where missing_since is null") == [(3,)]


def test_a_file_back_after_being_marked_missing_is_present_again(harness: Harness) -> None:
    shutil.copy(CAT, harness.uploads / "away.jpg")
    shutil.copy(PARROT, harness.uploads / "stays.jpg")  # an emptied folder is not swept
    harness.start(**BLIND, rescan_interval=0.3)
    harness.wait_tagged(harness.uploads / "away.jpg")
    (harness.uploads / "away.jpg").rename(harness.uploads.parent / "away.jpg")
    missing = "select missing_since is not null from files where path = ?"
    path = str(harness.uploads / "away.jpg")
    wait_for(lambda: harness.rows(missing, path) == [(1,)], what="marked missing")
    (harness.uploads.parent / "away.jpg").rename(harness.uploads / "away.jpg")  # same size, mtime
    wait_for(lambda: harness.rows(missing, path) == [(0,)], what="present again")
    assert harness.model.images == 2
