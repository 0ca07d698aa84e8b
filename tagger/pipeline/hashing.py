"""Content identity: a chunked SHA-256 of the file, taken before any decoding."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from tagger.errors import BadImage, Unreadable
from tagger.records import FileInfo, Hashed


@contextmanager
def _reading() -> Iterator[None]:
    """Turn the OS's reasons for not reading a file into `Unreadable` (worth a retry)."""
    try:
        yield
    except FileNotFoundError:
        raise Unreadable("file vanished before it could be read") from None
    except PermissionError:
        raise Unreadable("permission denied") from None
    except OSError as exc:
        raise Unreadable(f"cannot read file: {exc.strerror}") from None


def stat_file(path: str, follow_symlinks: bool = True) -> FileInfo:
    """Size and mtime of a regular file; anything else cannot be a photo."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadImage("the file name is not valid UTF-8; rename the file") from None
    with _reading():
        st = os.stat(path, follow_symlinks=follow_symlinks)
    if stat.S_ISLNK(st.st_mode):
        raise BadImage("a symlink, not followed (scan.follow_symlinks = false)")
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(f"not a regular file ({_kind(st.st_mode)})")
    return FileInfo(path=path, size=st.st_size, mtime_ns=_clamped(st.st_mtime_ns))


_INT64 = (-(2**63), 2**63 - 1)


def _clamped(mtime_ns: int) -> int:
    """An mtime the database can hold. Past 2262 or before 1677 (`touch -d`, `tar`, `rsync -t`
    can set any) it does not fit 64 bits; only whether it changed matters, and clamped it
    still tells that for every date a file really has."""
    return min(max(mtime_ns, _INT64[0]), _INT64[1])


def open_regular(path: str) -> io.BufferedReader:
    """Open for reading without ever blocking: a FIFO swapped in after the stat is refused."""
    with _reading():
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # it was one at the stat: replaced since
        os.close(fd)
        raise Unreadable(f"replaced by {_kind(mode)} while it was read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "a device")


def hash_file(file: FileInfo) -> Hashed:
    """SHA-256 of the content, checking the file did not change while it was read."""
    with _reading(), open_regular(file.path) as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if stat_file(file.path) != file:
        raise Unreadable("file changed while it was read")
    return Hashed(file=file, sha256=digest)
