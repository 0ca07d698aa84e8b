"""One daemon per database, whatever name the database is given."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.watch.test_daemon_process import Watch


def test_a_second_daemon_on_a_symlink_to_the_database_is_refused(watch: Watch) -> None:
    watch.start()
    link = watch.tmp / "link.db"
    link.symlink_to(watch.db)
    second = subprocess.run(
        [sys.executable, "-m", "tagger", "--db", str(link), "watch", str(watch.uploads)],
        env=os.environ | {"TAGGER_WATCH__RESCAN_INTERVAL": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1] == (
        "error: another `tagger watch` is already running on this database "
        f"({watch.tmp / 'tagger.db.watch.lock'})"
    )
    code, _, err = watch.stop()
    assert code == 0, err
