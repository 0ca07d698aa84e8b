"""Gather work into batches: full at `size`, or sent anyway `max_wait` after its first item."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

RECHECK_S = 0.02  # how often a waiting batch looks again whether more is coming


class EndOfInput:
    """Put on the queue after the last item; the batch in progress is sent at once."""


END = EndOfInput()


def batches(
    source: queue.Queue[Any],
    size: int,
    max_wait: float,
    more_coming: Callable[[], bool] = lambda: True,
) -> Iterator[list[Any]]:
    """Batches from `source` until END arrives; bounds each item's wait for company.

    A partial batch waits only while `more_coming()` says that items are on their way
    (being decoded): a lone photo dropped into an idle folder goes at once, not after
    `max_wait`, while a scan still fills its batches."""
    while True:
        first = source.get()
        if isinstance(first, EndOfInput):
            return
        batch = [first]
        deadline = time.monotonic() + max_wait
        while len(batch) < size:
            try:
                item = source.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not more_coming():
                    break
                try:
                    item = source.get(timeout=min(remaining, RECHECK_S))
                except queue.Empty:
                    continue
            if isinstance(item, EndOfInput):
                yield batch
                return
            batch.append(item)
        yield batch
