"""Content identity: a chunked SHA-256 of the file, taken before any decoding."""

from __future__ import annotations

import hashlib
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


def stat_file(path: str) -> FileInfo:
    """Size and mtime of a regular file; anything else cannot be a photo."""
    with _reading():
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise BadImage("not a regular file")
    return FileInfo(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def hash_file(file: FileInfo) -> Hashed:
    """SHA-256 of the content, checking the file did not change while it was read."""
    with _reading(), open(file.path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if stat_file(file.path) != file:
        raise Unreadable("file changed while it was read")
    return Hashed(file=file, sha256=digest)
