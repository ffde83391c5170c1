"""The server's Prometheus metrics (prometheus_client): requests, rows, latency, errors by kind.

With several uvicorn workers each process counts its own requests; prometheus_client's
multi-process mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``fusionrec serve``) adds them up,
so /metrics answers for the whole server whichever worker serves it.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self):
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = None if self.multiprocess else CollectorRegistry()
        kwargs = {} if self.multiprocess else {"registry": self.registry}
        self.requests = Counter("fusionrec_predict_requests", "POST /predict requests answered with scores", **kwargs)
        self.rows = Counter("fusionrec_predict_rows", "rows scored", **kwargs)
        self.latency = Histogram("fusionrec_predict_latency_seconds", "POST /predict time, body read to answer",
                                 buckets=LATENCY_BUCKETS, **kwargs)  # fmt: skip
        self.errors = Counter("fusionrec_errors", "requests refused, by kind", ["kind"], **kwargs)

    def observe(self, seconds: float, n_rows: int) -> None:
        self.requests.inc()
        self.rows.inc(n_rows)
        self.latency.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def exposition(self) -> tuple[bytes, str]:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
