"""The server's Prometheus metrics (prometheus_client), one registry per application."""

from __future__ import annotations

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Requests and errors by kind, latency and batch-size histograms, queue depth, the variant in use."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("segrt_requests", "Requests answered, by model, endpoint and HTTP status",
                                ["model", "endpoint", "code"], registry=self.registry)
        self.errors = Counter("segrt_errors", "Requests refused or failed, by kind", ["model", "kind"],
                              registry=self.registry)
        self.latency = Histogram("segrt_request_seconds", "Time from a request's arrival to its answer",
                                 ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch = Histogram("segrt_batch_size", "Images per batch run on the model", ["model"],
                               buckets=_BATCH_BUCKETS, registry=self.registry)
        self.images = Counter("segrt_images", "Images (or tensors) run on the model", ["model"],
                              registry=self.registry)
        self.queue = Gauge("segrt_queue_depth", "Images held: decoding, waiting for a batch or running", ["model"],
                           registry=self.registry)
        self.variant = Gauge("segrt_model_variant", "The variant each model runs (value 1)",
                             ["model", "variant", "provider"], registry=self.registry)

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
