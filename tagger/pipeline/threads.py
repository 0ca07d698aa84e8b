"""A stage thread that hands its failure back to whoever started it."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from typing import Any


class Worker(threading.Thread):
    """Runs `target(*args)`; `check()` re-raises its exception in the caller's thread.

    `halt` is set when it fails, so the rest of the stages stop instead of waiting on it.
    """

    def __init__(
        self,
        name: str,
        target: Callable[..., Any],
        *args: object,
        halt: threading.Event | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._fn, self._args, self._halt = target, args, halt
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._fn(*self._args)
        except BaseException as exc:
            self._error = exc
            if self._halt is not None:
                self._halt.set()

    def check(self) -> None:
        if self._error is not None:
            raise self._error


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread heaps. Each thread that allocates gets its own arena, which
    keeps what it freed; ours hand images from one to the next, so arenas only add up. Two
    took `tagger watch`'s peak RSS from 253 to 241 MB, at the same speed (docs/benchmarks.md).
    Other C libraries (musl) have no such knob; there it does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX
