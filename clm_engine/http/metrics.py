"""Prometheus metrics of one app (its own registry, so that two apps in a process, or a test's,
never share counters).

With several worker processes (``clm serve --workers N``) each process counts its own, in
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which ``clm serve`` sets
to a fresh folder): ``/metrics`` then answers for all the workers together, whichever one
serves the request."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from ..engine import IngestResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "clm_events",
            "Events received, by outcome (ingested, duplicate, rejected, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.actions = Counter(
            "clm_actions",
            "Actions by outcome: enqueued, ran_inline and retracted at ingestion; done, "
            "failed, vetoed, deferred ... when this process dispatches (--pump-interval).",
            ["outcome"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "clm_http_request_duration_seconds",
            "HTTP request latency, by route, method and status.",
            ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.write_batches = Counter(
            "clm_write_batches",
            "Write transactions of ingestion (requests arriving together share one).",
            registry=self.registry,
        )
        self.queue = Gauge(
            "clm_write_queue",
            "Requests waiting for the writer.",
            registry=self.registry,
            multiprocess_mode="livesum",  # the workers' queues added up (multiprocess mode)
        )
        for outcome in ("ingested", "duplicate", "rejected", "failed"):
            self.events.labels(outcome)

    def ingested(self, result: IngestResult) -> None:
        """Count a committed batch (rejections are counted where they are found)."""
        self.events.labels("ingested").inc(result.ingested)
        self.events.labels("duplicate").inc(result.duplicates)
        self.events.labels("failed").inc(len(result.failed))
        self.actions.labels("enqueued").inc(result.enqueued)
        self.actions.labels("ran_inline").inc(result.ran_inline)
        self.actions.labels("retracted").inc(result.retracted)
        self.write_batches.inc()

    def ticked(self, report: Any) -> None:
        for outcome, count in report.dispatched.outcomes.items():
            self.actions.labels(outcome).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        """What ``/metrics`` answers: every worker's counts in multiprocess mode, else this
        process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            together = CollectorRegistry()
            multiprocess.MultiProcessCollector(together)  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated
            return generate_latest(together), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def worker_stopped() -> None:
        """A worker is gone: its live gauges no longer count (multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # unannotated upstream
