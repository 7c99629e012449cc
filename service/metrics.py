"""Prometheus collectors, prefixed ``faceparse_``, in a registry of their own per app.

Endpoint labels are route templates (bounded), never raw paths. Under several service processes
(:mod:`service.processes`) each process writes its values to ``PROMETHEUS_MULTIPROC_DIR`` and a scrape,
whichever process answers it, reads them all: counters and histograms summed, the gauges as each says.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from service.batcher import BatchObserver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics(BatchObserver):
    """All service metrics; also the batcher's observer."""

    def __init__(self, live_close_codes: Sequence[int] = ()) -> None:
        """``live_close_codes``: the codes WS /recolor/live ends streams with, exported at 0 from the start so
        that ``rate()`` has a series before the first close."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("faceparse_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("faceparse_request_latency_seconds", "Request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("faceparse_queue_wait_seconds", "Time a request waited for its batch",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("faceparse_batch_size", "Requests per forward pass", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference = Histogram("faceparse_inference_seconds", "Forward pass time per batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.batch_failures = Counter("faceparse_batch_failures", "Batches whose forward pass raised", registry=r)
        self.depth = Gauge("faceparse_queue_depth", "Requests waiting for a batch", registry=r,
                           multiprocess_mode="livesum")
        self.rejections = Counter("faceparse_rejected", "Requests refused by the batcher", ["reason"], registry=r)
        self.model_info = Gauge("faceparse_model_info", "Loaded model", ["version", "device", "dtype"], registry=r,
                                multiprocess_mode="livemax")
        self.ready = Gauge("faceparse_ready", "Service processes with their model loaded and warm",
                           registry=r, multiprocess_mode="livesum")
        self.live_streams = Gauge("faceparse_live_streams", "Open WS /recolor/live streams", registry=r,
                                  multiprocess_mode="livesum")
        self.live_closed = Counter("faceparse_live_closed", "WS /recolor/live streams the server ended, by close code",
                                   ["code"], registry=r)
        for code in live_close_codes:
            self.live_closed.labels(str(code))

    def exposition(self) -> bytes:
        """The text a scrape gets: this app's registry, or every process's values in multiprocess mode."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def queue_depth(self, depth: int) -> None:
        self.depth.set(depth)

    def batch_started(self, size: int, queue_waits_s: Sequence[float]) -> None:
        self.batch_size.observe(size)
        for wait in queue_waits_s:
            self.queue_wait.observe(wait)

    def batch_finished(self, size: int, inference_s: float, ok: bool) -> None:
        self.inference.observe(inference_s)
        if not ok:
            self.batch_failures.inc()

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()
