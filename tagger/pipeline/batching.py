"""Gather work into batches: full at `size`, or sent anyway `max_wait` after its first item."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any


class EndOfInput:
    """Put on the queue after the last item; the batch in progress is sent at once."""


END = EndOfInput()


def batches(source: queue.Queue[Any], size: int, max_wait: float) -> Iterator[list[Any]]:
    """Batches from `source` until END arrives; bounds each item's wait for company."""
    while True:
        first = source.get()
        if isinstance(first, EndOfInput):
            return
        batch = [first]
        deadline = time.monotonic() + max_wait
        while len(batch) < size:
            remaining = deadline - time.monotonic()
            try:
                item = source.get(timeout=remaining) if remaining > 0 else source.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, EndOfInput):
                yield batch
                return
            batch.append(item)
        yield batch
