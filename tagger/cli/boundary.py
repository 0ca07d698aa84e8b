"""What the CLI's error boundary (`main.main`) does to everything it prints: one line,
no password of a database URL, a damaged database explained, output that cannot be
written named as such. The same mask covers every log line (`SecretMask`)."""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tagger.errors import TaggerError
from tagger.store.database import DamagedDatabase, damage, damaged, sqlite_file

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# scheme://user:PASSWORD@host: the password runs to the token's last "@" (an unescaped
# "@" or "/" in it must not leave its tail showing); and ?password=... in a query string.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)\S*(?=@)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)
_SQLALCHEMY_TAIL = re.compile(r"\s*(\[SQL: .*|\(Background on this error at: .*)$", re.DOTALL)


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***", text))


def one_line(text: str) -> str:
    """The first line that says something, control characters escaped: an error is one
    line, and a file name in it cannot move the cursor or recolour the terminal."""
    text = _SQLALCHEMY_TAIL.sub("", text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in first)


class SecretMask(logging.Filter):
    """Masks URL passwords in a log record's message and traceback (on the root handler,
    so every logger's records pass it, however they were formatted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def mask_log_handlers() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretMask) for f in handler.filters):
            handler.addFilter(SecretMask())


def describe(exc: BaseException, database: str | None) -> str:
    """The one line `main` prints after `error: ` for an exception a command raised."""
    detail = None if isinstance(exc, DamagedDatabase) else damage(exc)
    if detail is not None:  # found wherever it surfaced: a query, the writer, a migration
        where = (sqlite_file(database) or database) if database else "tagger.db"
        exc = damaged(where, detail)
    if isinstance(exc, TaggerError):
        return one_line(mask_secrets(str(exc)))
    if isinstance(exc, OutputError):
        return f"cannot write to standard output: {exc.strerror or exc}"
    if isinstance(exc, SQLAlchemyError):
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        return one_line(mask_secrets(f"database error: {type(cause).__name__}: {cause}"))
    text = one_line(mask_secrets(f"{type(exc).__name__}: {exc}"))
    return f"{text} (run with --debug for details)"


def debug_report(exc: BaseException) -> str:
    """The traceback --debug shows, passwords masked like everything else."""
    return mask_secrets("".join(traceback.format_exception(exc)))


class OutputError(OSError):
    """Writing to standard output failed (closed, full disk, a reader gone): tagged so at
    the source, since an OSError does not say which file it was about."""


class _StdoutFile(io.FileIO):
    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise OutputError(exc.errno, exc.strerror) from None


class ClosedOutput(io.TextIOBase):
    """Standard output when the caller closed it (`tagger query >&-`): writing is an error,
    so an answer is never lost silently (Python would make `sys.stdout` None, and print
    nothing, or fail with AttributeError)."""

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OutputError(errno.EBADF, "it is closed")


def guard_standard_streams() -> None:
    """Put /dev/null on standard descriptors the caller closed, so that no file tagger opens
    (a lock, a model) becomes "standard output"; make writing to a closed stdout fail; and
    have every failed write to stdout raise OutputError."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = ClosedOutput()
    elif sys.stdout is sys.__stdout__ and isinstance(sys.stdout, io.TextIOWrapper):
        old = sys.stdout
        old.flush()
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(_StdoutFile(old.fileno(), "wb", closefd=False)),
            encoding=old.encoding,
            errors=old.errors,
            line_buffering=old.line_buffering,
            write_through=old.write_through,
        )
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process keeps it to the end)


def flush_output() -> None:
    """Write out what is buffered now, inside the boundary, not at interpreter exit where
    a failure becomes "Exception ignored" noise."""
    if sys.stdout is not None:
        sys.stdout.flush()


def abandon_output() -> None:
    """After an output error: point standard output at /dev/null so that Python's last
    flush at exit cannot fail again and print a traceback."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
