"""`GET /metrics` in Prometheus' text format: what the daemon did and how fast.

A registry of tagger's own (not the process-wide default), so that two apps in one
process (the tests) never clash. Counts come from the daemon's live summary when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Live(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        files = CounterMetricFamily(
            "tagger_files",
            "Files the daemon handled since it started, by outcome",
            labels=["outcome"],
        )
        for outcome, count in status.get("counts", {}).items():
            files.add_metric([outcome], count)
        yield files
        yield GaugeMetricFamily(
            "tagger_queue_depth", "Files waiting to be tagged", value=status.get("queue", 0)
        )


class Metrics:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Live(status))
        self.batch_size = Histogram(
            "tagger_batch_size",
            "Images per forward pass, by who asked (pipeline or web)",
            ["source"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "tagger_inference_seconds",
            "Seconds per forward pass, by who asked",
            ["source"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tagger_request_seconds",
            "Seconds from request to answer, for /predict and uploads",
            ["endpoint"],
            buckets=_LATENCY,
            registry=self.registry,
        )

    def observe_batch(self, source: str, size: int, seconds: float) -> None:
        self.batch_size.labels(source).observe(size)
        self.inference_seconds.labels(source).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
