"""Prometheus metrics of one server: calls, grab outcomes, grant batches, open streams."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's instruments, on a registry of their own (several servers per process in
    tests). Label children are cached: this sits on every call's path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._calls = Counter(
            "liveresource_rpc_total",
            "Finished RPCs by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "liveresource_rpc_duration_seconds",
            "RPC handling time (streams: lifetime)",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._outcomes = Counter(
            "liveresource_allocate_outcomes_total",
            "Allocate answers by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "liveresource_grant_batch_size",
            "Grabs decided per group commit",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "liveresource_grant_commit_seconds",
            "Time to decide and commit one grant batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.admission_refused = Counter(
            "liveresource_admission_refused_total",
            "Allocate calls refused above the admission limit",
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "liveresource_open_streams",
            "Open StreamAllocationInfo subscriptions",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Any] = {}
        self._server: Any = None

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        """One finished call."""
        child = self._children.get((method, code))
        if child is None:
            child = self._children[(method, code)] = self._calls.labels(method, code)
        child.inc()
        latency = self._children.get((method, ""))
        if latency is None:
            latency = self._children[(method, "")] = self._latency.labels(method)
        latency.observe(seconds)

    def observe_outcome(self, outcome: str) -> None:
        """One Allocate answer."""
        child = self._children.get(("outcome", outcome))
        if child is None:
            child = self._children[("outcome", outcome)] = self._outcomes.labels(outcome)
        child.inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        """One committed grant batch."""
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def track_open_streams(self, count: Callable[[], int]) -> None:
        """Read the open-streams gauge from `count` at scrape time."""
        self.open_streams.set_function(count)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP on its own port; returns the port bound."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
