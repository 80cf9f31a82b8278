"""Prometheus metrics of one service, in their own registry (two apps in one process never share counters)."""
from __future__ import annotations

from typing import Any, Dict

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info,
                               PlatformCollector, ProcessCollector, generate_latest)

# Request latency on a Pi spans ~0.3 ms (a tiny int8 CNN over localhost) to seconds (a big model, an image
# upload over Wi-Fi): buckets from 0.25 ms up, roughly x2-x2.5 apart.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# samples per interpreter call (micro-batches): powers of two up to the runtime's chunk size
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Counters and histograms the app updates; ``render()`` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ... (Linux)
        PlatformCollector(registry=r)
        self.requests = Counter("edgeport_requests", "HTTP requests answered, by route, method and status code",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("edgeport_request_duration_seconds", "Time from request start to response end",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("edgeport_inference_duration_seconds",
                                   "Time of one interpreter call (one micro-batch)", buckets=LATENCY_BUCKETS,
                                   registry=r)
        self.batch = Histogram("edgeport_batch_samples", "Samples per interpreter call (micro-batching)",
                               buckets=BATCH_BUCKETS, registry=r)
        self.samples = Counter("edgeport_predicted_samples", "Samples run through the model", registry=r)
        self.load_seconds = Gauge("edgeport_model_load_seconds", "Seconds it took to load the model at start",
                                  registry=r)
        self.healthy = Gauge("edgeport_health_ok", "1 when the last /health check passed, 0 when it failed",
                             registry=r)
        self.model = Info("edgeport_model", "The artifact and backend this service runs", registry=r)

    def set_model(self, load_seconds: float, info: Dict[str, Any]) -> None:
        """Record the load time and the artifact/backend labels (``edgeport_model_info``)."""
        self.load_seconds.set(load_seconds)
        self.model.info({k: str(v) for k, v in info.items()})

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST
