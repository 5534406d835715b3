"""Prometheus metrics of one server: calls, grab outcomes, grant batches, open streams."""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _PerCall(Collector):
    """The per-call instruments as plain numbers, read at scrape time.

    Every call updates them, on the event loop's thread: a dict increment and a bisect
    instead of prometheus-client's locked counters and histogram (three lock round trips
    per call, a measurable share of a refused grab). The scrape runs in the HTTP server's
    thread and copies each dict in one C-level step under the GIL, so it never sees one
    change size while it reads; a scrape may see a call's count before its latency."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}
        """(method, code) -> finished calls."""
        self.latency: dict[str, list[float]] = {}
        """method -> count per latency bucket (the last one +Inf), then the sum of seconds."""
        self.outcomes: dict[str, int] = {}
        """Allocate outcome -> answers."""

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "liveresource_rpc_total",
            "Finished RPCs by method and status code",
            labels=["method", "code"],
        )
        for (method, code), n in dict(self.calls).items():
            calls.add_metric([method, code], n)
        yield calls
        latency = HistogramMetricFamily(
            "liveresource_rpc_duration_seconds",
            "RPC handling time (streams: lifetime)",
            labels=["method"],
        )
        for method, tally in dict(self.latency).items():
            counts = list(tally)
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip(
                (*map(str, _LATENCY_BUCKETS), "+Inf"), counts, strict=False
            ):
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            latency.add_metric([method], buckets, counts[-1])
        yield latency
        outcomes = CounterMetricFamily(
            "liveresource_allocate_outcomes_total",
            "Allocate answers by outcome",
            labels=["outcome"],
        )
        for outcome, n in dict(self.outcomes).items():
            outcomes.add_metric([outcome], n)
        yield outcomes


class Metrics:
    """The server's instruments, on a registry of their own (several servers per process in
    tests). The per-call ones are plain numbers (`_PerCall`): they sit on every call's path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._per_call = _PerCall()
        self.registry.register(self._per_call)
        self.outcome_counts = self._per_call.outcomes
        """Allocate answers by outcome, for a hot path to count in place (no call)."""
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
        self._server: Any = None

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        """One finished call."""
        per_call = self._per_call
        key = (method, code)
        per_call.calls[key] = per_call.calls.get(key, 0) + 1
        tally = per_call.latency.get(method)
        if tally is None:
            tally = per_call.latency[method] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        tally[bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # the first bucket it fits (le)
        tally[-1] += seconds

    def observe_outcome(self, outcome: str) -> None:
        """One Allocate answer."""
        outcomes = self._per_call.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

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
