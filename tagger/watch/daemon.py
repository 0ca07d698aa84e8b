"""`tagger watch`: reconcile, then follow the folder, feeding the one pipeline for months.

    observer -> Handler (enqueue only) -> main loop: Settler -> Intake -> Pipeline (its thread)
    reconcile/rescan walk (its thread) ----------------------------^

The main loop owns the timers: settling, periodic rescans, the status file and systemd's
heartbeat; it also answers the signals that the handlers only queued (`Signals`).
Shutdown (stop event) abandons the batch in flight rather than writing half of it; whatever
was not stored is found again by the next start's reconcile.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEvent

from tagger.config import Settings
from tagger.errors import TaggerError
from tagger.pipeline.files import PhotoFilter, printable, storable, walk, walk_and_sweep
from tagger.pipeline.runner import Pipeline
from tagger.pipeline.threads import Worker
from tagger.records import Gone, Moved, Outcome, Summary
from tagger.store.daemons import DaemonRecord, FolderLocks, beat, claim, leave, shared
from tagger.store.database import Store
from tagger.store.writer import Op, write_once
from tagger.watch.intake import Intake
from tagger.watch.observe import Handler, Identity, Observers, identity, read_mountinfo
from tagger.watch.settle import Settler
from tagger.watch.signals import STOPPING_SIGNALS, Signals
from tagger.watch.status import STATUS_INTERVAL, DaemonLock, StatusFiles
from tagger.watch.systemd import Notifier

if TYPE_CHECKING:
    from tagger.inference.base import Classifier

log = logging.getLogger(__name__)
TICK = 0.2  # seconds between main-loop turns
MAX_TRIES = 5  # for files that could not be read (vanished, permission): then wait for a change


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        classifier: Classifier,
        roots: Sequence[Path],
        notifier: Notifier | None = None,
        on_commit: Callable[[list[Op]], object] | None = None,
        signals: Signals | None = None,
    ) -> None:
        self._on_commit = on_commit
        self._settings = settings
        self._store = store
        # Paths an event said were written to: their stored size and mtime are not to be
        # trusted (a same-size rewrite, the mtime put back by `touch -r` or `cp -p`), so the
        # pipeline reads them again. Ordered, so the oldest goes first when full.
        self._rewritten: dict[str, None] = {}
        self._rewritten_limit = 4 * settings.watch.max_pending
        self._rewritten_lock = threading.Lock()
        self._signals = signals
        self._classifier = classifier
        self._roots = [Path(os.path.realpath(root)) for root in roots]  # one spelling a file
        self._notifier = notifier or Notifier({})
        self._filter = PhotoFilter(settings.scan)
        self._files = StatusFiles.of(settings, self._roots)
        # On a shared database: a row in its `daemons` table, refreshed through the writer.
        self._record = DaemonRecord([str(root) for root in self._roots])
        self._pipeline: Pipeline | None = None
        self._beating: Future[None] | None = None
        self._locks: FolderLocks | None = None
        self._started = time.time()
        self.state = "starting"
        self.intake = Intake()
        self.settler = Settler(settings.watch.stability_delay, settings.watch.max_pending)
        self.handler = Handler(capacity=4 * settings.watch.max_pending)
        self.observers = Observers(settings.watch, self.handler)
        self._tries: dict[str, int] = {}  # unreadable files: attempts so far
        # Each root as it was when watched, to notice it replaced, remounted or gone.
        self._identities: dict[Path, Identity | None] = {}
        self._rearmed: dict[str, int] = {}
        self._last_rearm: dict[str, float] = {}
        self._waiting: set[Path] = set()  # roots that are gone: waited for
        self._to_rescan: set[Path] = set()  # roots watched afresh, to reconcile
        # Paths to settle, from other threads: retries, and files a rescan found being written.
        self._later: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()

    def run(self, stop: threading.Event, on_start: Callable[[], object] | None = None) -> Summary:
        """Watch until `stop` is set; raises what stopped the pipeline, if anything did.

        `on_start` runs once this is the database's one daemon and its folders are watched,
        before the reconcile (the web server starts there)."""
        for root in self._roots:
            if not root.is_dir():
                raise TaggerError(f"cannot watch {root}: not a folder")
        with self._only_one():
            pipeline = self._pipeline = Pipeline(
                self._settings,
                self._store,
                self._classifier,
                self._done,
                self._on_commit,
                reread=self._reread,
            )
            runner = Worker(
                "tagger-pipeline", pipeline.run, self.intake.items(stop), stop, halt=stop
            )
            rescan: Worker | None = None
            try:
                mounts = read_mountinfo()
                for root in self._roots:  # watch first, so nothing slips between walk and watch
                    self._identities[root] = identity(root, mounts)  # before: a change re-arms
                    self.observers.watch(root)
                if on_start is not None:
                    on_start()
                rescan = self._rescan(stop)
                self.state = "reconciling"
                self._notifier.notify("READY=1", f"STATUS={self._status_line()}")
                self._write_status()
                log.info(
                    "watching %s", ", ".join(f"{r} ({k})" for r, k in self.observers.kinds.items())
                )
                rescan = self._loop(stop, runner, rescan)
            finally:
                self.state = "stopping"
                self._notifier.notify("STOPPING=1")
                stop.set()
                self.observers.stop()
                self.intake.close()
                runner.join()
                if rescan is not None:
                    rescan.join()
                self._write_status()
                self._leave()
            runner.check()
            if rescan is not None:
                rescan.check()
        return self.intake.summary

    def _loop(self, stop: threading.Event, runner: Worker, rescan: Worker) -> Worker:
        interval = self._settings.watch.rescan_interval
        heartbeat = self._notifier.watchdog_interval
        last_status = last_beat = last_rescan = time.monotonic()
        while not stop.wait(TICK):
            now = time.monotonic()
            self._answer_signals()
            if not runner.is_alive():
                break
            if not self.observers.alive():  # e.g. the watched folder was unmounted
                raise TaggerError("the folder observer stopped; see the log above for why")
            self._drain_events()
            for path in self.settler.settled():
                if self.settler.written(path):
                    self._distrust(str(Path(path)))
                if self.intake.offer(Path(path)):
                    self.settler.release(path)
            if not rescan.is_alive():
                if self.state == "reconciling" and self.intake.depth == 0:
                    self.state, last_rescan = "watching", now
                    log.info("reconciled: %s", self.intake.summary)
                overdue = self.state == "watching" and interval and now - last_rescan >= interval
                if overdue or self.handler.overflowed:
                    if self.handler.overflowed:
                        log.warning("too many events at once; rescanning instead")
                    self.handler.overflowed = False
                    rescan, last_rescan = self._rescan(stop), now
                    self._to_rescan.clear()
                elif self._to_rescan:
                    rescan = self._rescan(stop, sorted(self._to_rescan))
                    self._to_rescan.clear()
            if now - last_status >= STATUS_INTERVAL:
                self._check_roots()
                self._write_status()
                last_status = now
            if heartbeat and now - last_beat >= heartbeat / 2 and self._healthy(heartbeat):
                self._notifier.notify("WATCHDOG=1", f"STATUS={self._status_line()}")
                last_beat = now
        self._answer_signals()  # the one that stopped the loop, said before anything else
        return rescan

    def _answer_signals(self) -> None:
        if self._signals is None:
            return
        for signum in self._signals.pending():
            if signum in STOPPING_SIGNALS:
                log.info("%s: stopping", signum.name)
            elif signum == signal.SIGHUP:
                log.warning("SIGHUP: configuration is read at start; restart to apply changes")
            elif signum == signal.SIGUSR1:
                # Asked for, so shown whatever watch's log_level.
                level = max(logging.INFO, log.getEffectiveLevel())
                log.log(level, "SIGUSR1: %s", self._status_line())

    def _check_roots(self) -> None:
        """Watch a root afresh when it is no longer the folder that was watched (renamed
        away and recreated, replaced by a symlink, unmounted and mounted again): inotify
        stays on the dead folder. A root that is gone is waited for, not given up on: a NAS
        share or USB disk comes back, and stopping would only restart-loop under systemd."""
        mounts = read_mountinfo()
        for root in self._roots:
            now = identity(root, mounts)
            if now == self._identities.get(root):
                continue
            self._identities[root] = now
            if now is None:
                if root not in self._waiting:
                    log.warning("%s is gone; waiting for it to come back", root)
                    self._waiting.add(root)
                continue
            back = root in self._waiting
            try:
                self.observers.rearm(root)
            except OSError as exc:  # gone again already: the next tick looks again
                log.warning("cannot watch %s again: %s", root, exc.strerror)
                self._identities[root] = None
                self._waiting.add(root)
                continue
            self._waiting.discard(root)
            what = "is back" if back else "was replaced (a remount?)"
            log.warning("%s %s: watching it again and rescanning", root, what)
            self._rearmed[str(root)] = self._rearmed.get(str(root), 0) + 1
            self._last_rearm[str(root)] = time.time()
            self._to_rescan.add(root)

    def _rescan(self, stop: threading.Event, only: Sequence[Path] | None = None) -> Worker:
        # A root that is gone is not walked: its files would all be marked missing.
        roots = [r for r in (self._roots if only is None else only) if r not in self._waiting]
        photo_filter = self._filter
        follow = self._settings.scan.follow_symlinks
        delay = self._settings.watch.stability_delay
        model = self._classifier.id

        def feed() -> None:
            started, cpu = time.monotonic(), time.process_time()
            found = unchanged = 0
            for root in roots:
                # Read once for the root: a file that still looks as stored is not queued.
                stored = self._store.unchanged_candidates(storable(root), model)
                for item in walk_and_sweep([root], photo_filter, follow):
                    if stop.is_set():
                        return
                    if isinstance(item, Path):
                        found += 1
                        now = _stat(item, follow)
                        if now is not None and _being_written(now, delay):
                            self._later.put((str(item), delay))  # read once it has settled
                            continue
                        if now is not None and stored.get(storable(item)) == now[:2]:
                            unchanged += 1
                            continue
                    self.intake.put(item, stop)
            self.intake.unchanged(unchanged)
            log.info(
                "rescanned %s: %d files, %d unchanged by size and mtime, in %.2f s CPU, %.2f s",
                ", ".join(printable(root) for root in roots),
                found,
                unchanged,
                time.process_time() - cpu,
                time.monotonic() - started,
            )

        return Worker("tagger-rescan", feed, halt=stop)

    def _drain_events(self) -> None:
        """Turn queued events into settling files, moves and removals; schedule retries."""
        while True:
            try:
                path, delay = self._later.get_nowait()
            except queue.Empty:
                break
            if not self.settler.touch(path, delay=delay) and not self.intake.offer(Path(path)):
                self.handler.overflowed = True  # a flood: the next rescan takes it
        while True:
            try:
                event = self.handler.events.get_nowait()
            except queue.Empty:
                return
            self._on_event(event)

    def _on_event(self, event: FileSystemEvent) -> None:
        src = _text(event.src_path)
        if event.event_type == "deleted":
            self.settler.forget(src)
            if _gone(src, event.is_directory):
                self.intake.offer(Gone(storable(src)))
        elif event.event_type == "moved":
            dst = _text(event.dest_path)
            self.settler.forget(src)
            src_kept = self._wanted(src, event.is_directory)
            dst_kept = self._wanted(dst, event.is_directory)
            if src_kept and dst_kept:
                self.intake.offer(Moved(storable(src), storable(dst)))
            elif src_kept:
                self.intake.offer(Gone(storable(src)))
            if dst_kept and not event.is_directory:
                # Renamed over from a file not stored (a temporary): new content.
                self._settle(dst, written=not src_kept)
        elif event.is_directory:
            if event.event_type == "created" and self._wanted(src, True):
                # Files may land in a new folder before its watch is set up: look now.
                for path in walk([Path(src)], self._filter, self._settings.scan.follow_symlinks):
                    self._settle(str(path))
        elif self._wanted(src, False):  # created, written, closed after writing
            self._settle(src, closed=event.event_type == "closed", written=True)

    def _done(self, path: str, outcome: Outcome) -> None:
        """The pipeline's report (from its threads): log, free the path, plan any retry."""
        log.info("%s %s", outcome.value, printable(path))
        tries = self._tries.pop(path, 0) + 1
        if outcome is Outcome.UNREADABLE:
            if tries <= MAX_TRIES:
                self._tries[path] = tries
                self._later.put((path, self._settings.watch.stability_delay * 3**tries))
            else:
                log.warning(
                    "gave up on %s after %d tries; it is tried again when it changes or at "
                    "the next rescan",
                    printable(path),
                    MAX_TRIES,
                )
        self.intake.done(path, outcome)

    def _settle(self, path: str, closed: bool = False, written: bool = False) -> None:
        if not self.settler.touch(path, closed, written=written):
            self.handler.overflowed = True

    def _wanted(self, path: str, is_directory: bool) -> bool:
        root = next((r for r in self._roots if Path(path).is_relative_to(r)), None)
        if root is None:
            return False
        if is_directory:
            return self._filter.wanted_folder(Path(path), root)
        return self._filter.wanted(Path(path), root)

    def _distrust(self, path: str) -> None:
        with self._rewritten_lock:
            self._rewritten[path] = None
            while len(self._rewritten) > self._rewritten_limit:
                del self._rewritten[next(iter(self._rewritten))]

    def _reread(self, path: str) -> bool:
        """The pipeline's question, once per look: did an event say `path` was written?"""
        with self._rewritten_lock:
            return self._rewritten.pop(path, 0) is None

    @property
    def roots(self) -> list[Path]:
        return list(self._roots)

    def _only_one(self) -> AbstractContextManager[object]:
        """The database's one daemon (SQLite: a lock beside the file), or, on a database
        several machines share, the one daemon of each of its folders (advisory locks)."""
        if shared(self._store):
            self._locks = FolderLocks(self._store, self._record.roots)
            return self._locks
        return DaemonLock(self._files)

    def _beat(self) -> None:
        """Refresh this daemon's row in the shared database, through the pipeline's writer;
        one at a time (a stalled database must not pile them up)."""
        writer = None if self._pipeline is None else self._pipeline.writer
        if writer is None or (self._beating is not None and not self._beating.done()):
            return
        first = self._beating is None
        status, record = self.status(), self._record

        def refresh(session: Any) -> None:
            if first:
                claim(session, record)
            beat(session, record, status)

        try:
            self._beating = writer.submit(refresh)
        except TaggerError:  # the writer stopped: the run is ending, and says why
            return
        self._beating.add_done_callback(_log_failed_beat)

    def _leave(self) -> None:
        """At a clean stop the row goes (one a crash leaves grows stale in `tagger status`,
        until a daemon takes over its folders)."""
        if not shared(self._store) or self._beating is None:
            return
        try:
            write_once(self._store, lambda session: leave(session, self._record.id))
        except Exception as exc:
            log.warning("cannot remove this daemon from the database's list: %s", exc)

    def healthy(self, within: float = 60.0) -> bool:
        """Running, and either idle or making progress within `within` seconds."""
        return self.state in ("reconciling", "watching") and self._healthy(within)

    def _healthy(self, heartbeat: float) -> bool:
        """Alive, and either idle or making progress: a hung model stops the heartbeat."""
        if not self.observers.alive():
            return False
        last = self.intake.last_activity or self._started
        return self.intake.depth == 0 or time.time() - last < heartbeat

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "state": self.state,
            "started": self._started,
            "roots": [str(root) for root in self._roots],
            "observers": {
                root: f"{how}; re-armed {self._rearmed[root]}x" if root in self._rearmed else how
                for root, how in self.observers.kinds.items()
            }
            | {str(root): "waiting for it to come back" for root in self._waiting},
            "waiting": sorted(str(root) for root in self._waiting),
            "rearmed": dict(self._rearmed),
            "last_rearm": dict(self._last_rearm),
            "queue": self.intake.depth + len(self.settler),
            "counts": {o.value: n for o, n in self.intake.summary.counts.items()},
            "last_activity": self.intake.last_activity,
        }

    def _write_status(self) -> None:
        if self._locks is not None and self.state != "stopping":
            self._locks.keep()  # another daemon took a folder meanwhile: this one stops
            self._beat()
        try:
            self._files.write(self.status())
        except OSError as exc:
            log.warning("cannot write %s: %s", self._files.status, exc.strerror)

    def _status_line(self) -> str:
        c = self.intake.summary.counts
        return (
            f"{self.state}: {c[Outcome.NEW]} tagged, {c[Outcome.DUPLICATE]} duplicates, "
            f"{c[Outcome.FAILED]} failed, {self.intake.depth + len(self.settler)} queued"
            + "".join(f"; waiting for {root}" for root in sorted(self._waiting))
        )


def _log_failed_beat(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("cannot update this daemon's row in the database: %s", exc)


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


def _gone(path: str, is_directory: bool) -> bool:
    """Whether a path said to be deleted is gone. Polling compares listings, so a folder it
    can no longer read (its mode changed, a share failing) looks emptied: what lies under it
    is not known to be gone. A file that is back already (deleted, then written again) has
    events of its own to follow; a folder that is back may lack some of its files."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # a folder above it cannot be searched
        return False
    return is_directory


def _stat(path: Path, follow_symlinks: bool) -> tuple[int, int, float] | None:
    """Size, mtime and ctime of a regular file (None for anything else: the pipeline says
    what is wrong with it)."""
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime


def _being_written(now: tuple[int, int, float], delay: float) -> bool:
    """Changed within the last `delay` seconds, by its inode change time: a copy in progress
    that a rescan must not read half-written. ctime, not mtime, which `cp -p` and rsync set
    to the camera's clock; a ctime in the future (a skewed NFS server) does not count."""
    return 0 <= time.time() - now[2] < delay
