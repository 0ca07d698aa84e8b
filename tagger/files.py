"""Which files are photos: the extension and junk filter, and the folder walk.

`tagger scan` walks with this; `tagger watch` filters its events with the same rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from fnmatch import fnmatch
from pathlib import Path

from tagger.config import ScanSettings

log = logging.getLogger(__name__)


class PhotoFilter:
    """Decides by name alone whether a path is a photo worth looking at."""

    def __init__(self, settings: ScanSettings) -> None:
        self._extensions = {
            ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in settings.extensions
        }
        self._ignore = [glob.lower() for glob in settings.ignore]

    def ignored(self, name: str) -> bool:
        """True for junk such as `@eaDir`, `.DS_Store`, `._x.jpg` or a `.part` download."""
        lowered = name.lower()
        return any(fnmatch(lowered, glob) for glob in self._ignore)

    def wanted(self, path: Path, root: Path) -> bool:
        """A photo extension, and no ignored component between `root` and the file."""
        if path.suffix.lower() not in self._extensions:
            return False
        relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        return not any(self.ignored(part) for part in relative.parts)


def walk(roots: Iterable[Path], photo_filter: PhotoFilter, follow_symlinks: bool) -> Iterator[Path]:
    """Every wanted file under `roots`, skipping ignored folders without entering them."""
    for root in roots:
        root = root.absolute()
        if root.is_file():
            if photo_filter.wanted(root, root.parent):
                yield root
            continue
        for dirpath, dirnames, filenames in os.walk(
            root, followlinks=follow_symlinks, onerror=_log_walk_error
        ):
            dirnames[:] = sorted(d for d in dirnames if not photo_filter.ignored(d))
            folder = Path(dirpath)
            for name in sorted(filenames):
                path = folder / name
                if not photo_filter.wanted(path, root):
                    continue
                if not follow_symlinks and path.is_symlink():
                    log.info("skipped symlink %s (scan.follow_symlinks is off)", _printable(path))
                    continue
                if not _utf8(str(path)):
                    log.warning("skipped %s: file name is not valid UTF-8", _printable(path))
                    continue
                yield path


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: Path) -> str:
    """The path with undecodable bytes and control characters escaped, safe for a log line."""
    text = str(path)
    return text if text.isprintable() and _utf8(text) else ascii(text)[1:-1]


def _log_walk_error(error: OSError) -> None:
    log.warning("cannot read folder %s: %s", error.filename, error.strerror)
