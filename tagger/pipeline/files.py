"""Which files are photos: the extension and junk filter, and the folder walk.

`tagger scan` walks with this; `tagger watch` filters its events with the same rules.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tagger.config import ScanSettings
from tagger.records import Swept, utcnow

log = logging.getLogger(__name__)
_VANISHED = {errno.ENOENT, errno.ENOTDIR}  # deleted or replaced while the walk went on


class PhotoFilter:
    """Decides by name alone whether a path is a photo worth looking at."""

    def __init__(self, settings: ScanSettings) -> None:
        self._extensions = {
            ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in settings.extensions
        }
        # One expression for every glob: a walk asks this of each name.
        globs = "|".join(f"(?:{fnmatch.translate(glob.lower())})" for glob in settings.ignore)
        self._ignore = re.compile(globs or "(?!)", re.DOTALL)

    def ignored(self, name: str) -> bool:
        """True for junk such as `@eaDir`, `.DS_Store`, `._x.jpg` or a `.part` download."""
        return self._ignore.match(name.lower()) is not None

    def wanted_name(self, name: str) -> bool:
        """A photo's extension, and not junk: enough in a walk, which skips ignored folders."""
        return os.path.splitext(name)[1].lower() in self._extensions and not self.ignored(name)

    def wanted(self, path: Path, root: Path) -> bool:
        """A photo extension, and no ignored component between `root` and the file."""
        return path.suffix.lower() in self._extensions and self.wanted_folder(path, root)

    def wanted_folder(self, path: Path, root: Path) -> bool:
        """No ignored component between `root` and `path`."""
        relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        return not any(self.ignored(part) for part in relative.parts)


def walk(
    roots: Iterable[Path],
    photo_filter: PhotoFilter,
    follow_symlinks: bool,
    on_error: Callable[[OSError], None] | None = None,
) -> Iterator[Path]:
    """Every wanted file under `roots`, skipping ignored folders without entering them."""

    def error(exc: OSError) -> None:
        log.warning("cannot read folder %s: %s", printable(exc.filename), exc.strerror)
        if on_error is not None:
            on_error(exc)

    for root in roots:
        root = Path(os.path.realpath(root))  # `..` and symlinks resolved: one file, one path
        if root.is_file():
            if photo_filter.wanted(root, root.parent):
                yield root
            continue
        visited: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(
            root, followlinks=follow_symlinks, onerror=error
        ):
            if follow_symlinks and not _first_visit(dirpath, visited):
                log.warning(
                    "skipped %s: a symlink loop, or a folder seen before", printable(dirpath)
                )
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not photo_filter.ignored(d))
            folder = Path(dirpath)
            for name in sorted(filenames):
                if photo_filter.wanted_name(name):
                    yield folder / name


def _first_visit(folder: str, visited: set[tuple[int, int]]) -> bool:
    try:
        st = os.stat(folder)
    except OSError:
        return False
    key = (st.st_dev, st.st_ino)
    if key in visited:
        return False
    visited.add(key)
    return True


def walk_and_sweep(
    roots: Iterable[Path], photo_filter: PhotoFilter, follow_symlinks: bool
) -> Iterator[Path | Swept]:
    """`walk`, and after each root a `Swept`: what the database holds under it and the walk
    did not find is gone. A folder that could not be read (`lost+found`, another user's
    folder, a share that fails) is skipped, not swept: what lies under it stays as it was,
    and the folder is listed by `tagger errors`. The rest of the root is swept all the same.
    A folder that vanished while the walk went on is no exception: its files are gone."""
    for root in roots:
        yield from _walk_and_sweep_root(root, photo_filter, follow_symlinks)


def _walk_and_sweep_root(
    root: Path, photo_filter: PhotoFilter, follow_symlinks: bool
) -> Iterator[Path | Swept]:
    unreadable: dict[str, str] = {}  # folder -> why
    present: set[str] = set()
    started = utcnow()

    def note(exc: OSError) -> None:
        if exc.errno not in _VANISHED and exc.filename is not None:
            unreadable[storable(os.path.abspath(exc.filename))] = exc.strerror or str(exc)

    for path in walk([root], photo_filter, follow_symlinks, note):
        present.add(storable(path))
        yield path
    if root.exists():
        folders = tuple(sorted(unreadable.items()))
        yield Swept(storable(os.path.realpath(root)), frozenset(present), started, folders)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(path: Path | str) -> str:
    """The path as text a database can hold: undecodable bytes become `\\xNN` escapes."""
    text = str(path)
    return text if _utf8(text) else os.fsencode(text).decode("utf-8", "backslashreplace")


def printable(path: Path | str) -> str:
    """The path with undecodable bytes and control characters escaped, safe for a log line."""
    text = str(path)
    return text if text.isprintable() and _utf8(text) else ascii(text)[1:-1]
