"""Issue 16, class 3: the password of a database URL never reaches the terminal or the log.

No PostgreSQL server is needed: what matters is the text of the errors. The psycopg driver
is installed (the test extra) and the connection is refused: one line names the server,
never the password (tests/store/test_postgres.py has the driver missing)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.processes import one_error_line, run_tagger
from tests.helpers import Result

URL = "postgresql+psycopg://tagger:s3cret@127.0.0.1:1/x"
SHOWN = "postgresql+psycopg://tagger:***@127.0.0.1:1/x"
SERVER = "127.0.0.1:1"

DATABASE_COMMANDS = [
    ("status",),
    ("query",),
    ("query", "label:cat", "--format", "json"),
    ("show", "x.jpg"),
    ("labels",),
    ("labels", "--tree"),
    ("duplicates",),
    ("errors",),
    ("export",),
    ("prune",),
    ("retag",),
    ("xmp", "--mode", "mirror"),
    ("scan", "."),
    ("db", "status"),
    ("db", "upgrade"),
]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_no_command_prints_the_password(
    tagger: Callable[..., Result], command: tuple[str, ...]
) -> None:
    result = tagger("--db", URL, *command)
    assert "s3cret" not in result.out + result.err
    assert result.code == (4 if command == ("status",) else 1), result
    assert one_error_line(result), result.err
    assert result.err.startswith(f"error: cannot connect to PostgreSQL at {SERVER}: "), result.err


def test_watch_masks_it_in_its_log_and_its_error(tmp_path: Path) -> None:
    """The daemon's journal names its database; the log filter masks the password."""
    photos = tmp_path / "photos"
    photos.mkdir()
    result = run_tagger("--db", URL, "watch", str(photos), cwd=tmp_path)
    assert result.code == 1
    assert "s3cret" not in result.out + result.err
    lines = result.err.splitlines()
    assert f"database {SHOWN}" in lines  # the log line, as `journalctl -u tagger` shows it
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: cannot connect to PostgreSQL at {SERVER}: ")


def test_debug_tracebacks_are_masked_too(tagger: Callable[..., Result]) -> None:
    result = tagger("--debug", "--db", URL, "query")
    assert result.code == 1 and "Traceback" in result.err
    assert "s3cret" not in result.out + result.err and SERVER in result.err


def test_config_show_and_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGGER_DB", URL)
    shown = run_tagger("config", "show")
    assert shown.code == 0 and SHOWN in shown.out and "s3cret" not in shown.out + shown.err
    status = run_tagger("status")
    assert status.code == 4 and one_error_line(status) and "s3cret" not in status.err


def test_every_log_record_is_masked_with_its_traceback(
    tagger: Callable[..., Result], capsys: pytest.CaptureFixture[str]
) -> None:
    """Any logger, any argument, any exception text: the handler the CLI installs masks it."""
    tagger("config", "show")  # main() sets up logging as every command has it
    capsys.readouterr()
    log = logging.getLogger("tagger.anywhere")
    try:
        raise ConnectionError(f"could not reach {URL}")
    except ConnectionError:
        log.error("database write failed: %s", URL, exc_info=True)
    log.warning("retrying %s", {"url": URL})
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert err.count(SHOWN) == 3 and "ConnectionError" in err


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (URL, SHOWN),
        ("mysql://u:p@ss/w:rd@db.lan/tags x", "mysql://u:***@db.lan/tags x"),
        ("redis://:only-a-password@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "postgresql://u@h/db?sslmode=require&password=pw",
            "postgresql://u@h/db?sslmode=require&password=***",
        ),
        ("sqlite:////srv/tagger.db", "sqlite:////srv/tagger.db"),
        ("no url: a:b@c", "no url: a:b@c"),
    ],
)
def test_the_mask(text: str, masked: str) -> None:
    from tagger.cli.boundary import mask_secrets

    assert mask_secrets(text) == masked
