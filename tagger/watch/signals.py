"""The signals `tagger watch` answers: the handler only queues the signal (and sets the stop
event for those that stop), the daemon's main loop does the rest (huey's consumer does so)."""

from __future__ import annotations

import faulthandler
import queue
import signal
import threading

STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
LOGGED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)


class Signals:
    """Signals for the daemon's main loop to act on. The handler only queues the number
    (`SimpleQueue.put` is safe in a signal handler, where logging is not: the interrupted
    code may hold the lock of the stream it writes to) and, for SIGTERM, SIGINT and SIGQUIT,
    sets `stop`. The main loop says what it heard, logs the status for SIGUSR1, and ignores
    SIGHUP, which would otherwise kill the daemon."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._received: queue.SimpleQueue[int] = queue.SimpleQueue()

    def install(self) -> None:
        """Handle every signal of the convention (on the main thread, as Python requires).
        SIGUSR2 writes every thread's stack to stderr, for a daemon that seems stuck."""
        for signum in (*STOPPING_SIGNALS, *LOGGED_SIGNALS):
            signal.signal(signum, self.received)
        faulthandler.register(signal.SIGUSR2, all_threads=True)

    def received(self, signum: int, _frame: object = None) -> None:
        self._received.put(signum)
        if signum in STOPPING_SIGNALS:
            self._stop.set()

    def pending(self) -> list[signal.Signals]:
        """The signals received since the last call, in order."""
        found = []
        while True:
            try:
                found.append(signal.Signals(self._received.get_nowait()))
            except queue.Empty:
                return found
