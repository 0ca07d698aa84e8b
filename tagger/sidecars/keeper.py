"""Which sidecar belongs to which photo, what goes in it, and keeping it current as the
daemon stores, moves and forgets photos (one thread, fed after each database write)."""

from __future__ import annotations

import errno
import logging
import os
import queue
import secrets
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger.config import Settings
from tagger.labels.hierarchy import hierarchy
from tagger.labels.names import Language, shown
from tagger.records import Gone, Link, Moved, Tagged
from tagger.sidecars.xmp import SidecarError, merged
from tagger.store.database import Store
from tagger.store.reports import file_report
from tagger.store.schema import OWN_PREFIX

log = logging.getLogger(__name__)
_STOP = object()


@dataclass(frozen=True)
class Outcome:
    photo: str
    sidecar: Path
    error: str | None = None


class Sidecars:
    """Writes sidecars for stored photos: on demand (`write`), or as the writer commits."""

    def __init__(self, settings: Settings, store: Store, mode: str | None = None) -> None:
        xmp = settings.xmp
        self.mode = mode or xmp.write
        self.root = (xmp.dir or settings.data_dir / "xmp").expanduser().absolute()
        self._adobe = xmp.adobe_names
        self._min_score = xmp.min_score
        self._language: Language = xmp.language or settings.labels.language
        self._store = store
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None

    def path_for(self, photo: str) -> Path:
        """The sidecar of a photo; a mirror sidecar is always inside the mirror's root."""
        if self.mode == "mirror":
            return self._mirrored(photo + ".xmp")
        if self._adobe:
            return Path(photo).with_suffix(".xmp")
        return Path(photo + ".xmp")

    def _mirrored(self, path: str) -> Path:
        inside = Path(os.path.normpath(os.path.join(self.root, os.path.normpath(path).lstrip("/"))))
        if not inside.is_relative_to(self.root) or inside == self.root:
            raise SidecarError(f"{path!r} has no place in the mirror")
        return inside

    def write(self, photo: str) -> Outcome:
        """Merge the photo's stored labels into its sidecar; a sidecar tagger cannot read,
        or cannot write, is left as it is and the reason returned."""
        sidecar = self.path_for(photo)
        report = file_report(self._store, photo)
        if report is None or not report["tags"]:
            return Outcome(photo, sidecar, "not tagged yet")
        try:
            existing = _read_sidecar(sidecar)
            content = merged(existing, self.keyword_paths(report["tags"]))
            _write_atomically(sidecar, content)
        except (SidecarError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("cannot write sidecar %s: %s", sidecar, reason)
            return Outcome(photo, sidecar, reason)
        return Outcome(photo, sidecar)

    def keyword_paths(self, tags: list[dict[str, Any]]) -> list[list[str]]:
        """Each label above xmp.min_score as a path from the most general stored label down
        to it (`animal`, `cat`, `tabby`), leaves only: the others are their prefixes."""
        tree = hierarchy()
        kept = {t["wnid"]: t for t in tags if t["score"] >= self._min_score and t["wnid"]}
        chains = [
            [w for w in reversed(tree.main_line(wnid)) if w in kept]
            for wnid in kept
            if wnid in tree.synsets
        ]
        leaves = [c for c in chains if not any(o != c and o[: len(c)] == c for o in chains)]
        return [
            [shown(kept[w]["label"], w, self._language) for w in chain]
            for chain in sorted(leaves, key=lambda c: -kept[c[-1]]["score"])
        ] + [  # labels of one's own: a keyword each, outside the hierarchy
            [tag["label"]] for wnid, tag in kept.items() if wnid.startswith(OWN_PREFIX)
        ]

    # Keeping up with the daemon.
    def committed(self, ops: list[Any]) -> None:
        """The writer's report of what it stored: handled on the sidecar thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tagger-sidecars", daemon=True)
            self._thread.start()
        self._queue.put(ops)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while (ops := self._queue.get()) is not _STOP:
            assert isinstance(ops, list)
            for op in ops:
                try:
                    self._follow(op)
                except Exception as exc:  # one photo's sidecar; the rest go on
                    log.warning(
                        "sidecar after %s: %s: %s", type(op).__name__, type(exc).__name__, exc
                    )

    def _follow(self, op: object) -> None:
        if isinstance(op, Tagged):
            self.write(op.decoded.hashed.file.path)
        elif isinstance(op, Link):
            self.write(op.file.path)
        elif isinstance(op, Moved) and self.mode == "mirror":
            self._move(op.src, op.dst)
        elif isinstance(op, Gone) and self.mode == "mirror":
            self._remove(op.path)
        # beside: a move or delete of the photo is the moving app's to follow; Seen, Swept
        # (maybe an unmounted share) and Failure change nothing.

    def _move(self, src: str, dst: str) -> None:
        for old, new in (
            (self.path_for(src), self.path_for(dst)),
            (self._folder(src), self._folder(dst)),
        ):
            if old.exists():
                new.parent.mkdir(parents=True, exist_ok=True)
                os.replace(old, new)

    def _remove(self, path: str) -> None:
        self.path_for(path).unlink(missing_ok=True)
        shutil.rmtree(self._folder(path), ignore_errors=True)

    def _folder(self, path: str) -> Path:
        """The mirror of a folder (a move or delete of a whole folder)."""
        return self._mirrored(path)


MAX_SIDECAR_BYTES = 4_000_000


def _read_sidecar(path: Path) -> bytes | None:
    """An existing sidecar's bytes: a regular file of sane size, never through a symlink
    (a photo folder is shared; a link could point anywhere) and never a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SidecarError("a symlink, not followed") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SidecarError("not a regular file")
        if st.st_size > MAX_SIDECAR_BYTES:
            raise SidecarError(f"over {MAX_SIDECAR_BYTES:,} bytes")
        return handle.read(MAX_SIDECAR_BYTES + 1)


def _write_atomically(target: Path, content: bytes) -> None:
    """A new file under an unguessable name (never through a planted link), then renamed
    over the sidecar: a reader sees the old sidecar or the new one, nothing between."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(temporary, flags, 0o644), "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
