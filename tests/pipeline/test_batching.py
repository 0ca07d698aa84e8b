"""A partial batch waits for company only while more is on its way."""

from __future__ import annotations

import queue
import threading
import time

from tagger.pipeline.batching import batches


def test_a_lone_image_goes_at_once_when_nothing_more_is_coming() -> None:
    source: queue.Queue[object] = queue.Queue()
    source.put("lone")
    began = time.monotonic()
    assert next(batches(source, size=8, max_wait=60, more_coming=lambda: False)) == ["lone"]
    assert time.monotonic() - began < 5  # not the 60 s max_wait


def test_a_batch_waits_for_images_still_being_decoded() -> None:
    source: queue.Queue[object] = queue.Queue()
    decoding = threading.Event()
    decoding.set()
    source.put(1)

    def decoded() -> None:
        source.put(2)
        decoding.clear()

    later = threading.Timer(0.2, decoded)
    later.start()
    assert next(batches(source, size=8, max_wait=60, more_coming=decoding.is_set)) == [1, 2]
    later.join()
