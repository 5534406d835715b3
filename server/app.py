"""Assembles and runs the server: store, use cases, gRPC servicer, health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2

from server.api.auth import Authenticator, load_token_key
from server.api.calls import CallRunner
from server.api.registration import add_services
from server.api.servicer import SERVICE_NAME, Servicer
from server.config import Settings
from server.domain.errors import Unavailable
from server.metrics import Metrics
from server.service.admission import AdmissionGate
from server.service.clock import Clock, utc_now
from server.service.context import ServiceContext
from server.service.eligibility import EligibilityDesk
from server.service.grants import GrantDesk
from server.service.lifecycle import LifecycleTicker, prune_forever
from server.service.shielding import drain
from server.service.watch import WatchJournal, WatchTracker
from server.store.interface import Store
from server.store.sql_store import SqlStore
from server.streaming.feed import FeedRegistry

log = logging.getLogger("liveresource")

# Measured on grpcio 1.85: with defaults, bursts of a few thousand calls come back
# CANCELLED and only ~2,100 streams get served; these lift both limits.
GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.server.max_pending_requests", 50_000),
    ("grpc.server.max_pending_requests_hard_limit", 150_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


@dataclass
class RunningServer:
    """A started server and what it owns; `stop()` shuts it down gracefully."""

    server: grpc.aio.Server
    port: int
    store: Store
    feeds: FeedRegistry
    health: health.aio.HealthServicer
    desk: GrantDesk | None = None
    metrics: Metrics | None = None
    metrics_port: int = 0
    writer: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopped: bool = False

    async def stop(self, grace: float) -> None:
        """Health says NOT_SERVING, streams end with UNAVAILABLE, calls drain, then close."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        self.feeds.close()
        await self.server.stop(grace)
        # The writer stops only after the calls drained: their grants must commit first.
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer
        if self.desk is not None:
            self.desk.fail_pending(
                Unavailable("the server is shutting down; retry", reason="SHUTTING_DOWN")
            )
        await drain(max(grace, 1.0))
        if self.metrics is not None:
            self.metrics.close()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()
        log.info("server stopped")


async def start_server(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    wrap_store: Callable[[Store], Store] = lambda store: store,
) -> RunningServer:
    """Start serving on settings.host:settings.port (0 picks a free port).

    `wrap_store` lets tests put a fault-injecting Store around the real one.
    """
    key = load_token_key(settings.token_key, settings.token_key_file, settings.data_dir)
    store = wrap_store(
        SqlStore(settings.resolved_database_url(), sqlite_synchronous=settings.sqlite_synchronous)
    )
    await store.start()
    ctx = ServiceContext(
        store=store, clock=clock, checkout_lock=timedelta(seconds=settings.checkout_lock_seconds)
    )
    feeds = FeedRegistry(
        store,
        capacity=max(4096, 2 * settings.stream_max_lag_events),
        stock_interval=settings.stock_update_interval_seconds,
    )
    metrics = Metrics() if settings.metrics_port else None
    shared = settings.resolved_database_url().startswith("postgresql")
    desk = None
    if settings.allocation_batching:
        desk = GrantDesk(
            ctx,
            on_batch=metrics.observe_batch if metrics else None,
            # Other processes may write the same pools: nothing is refused from memory.
            shared=shared,
        )
    watch = WatchTracker(timedelta(seconds=settings.watch_gap_seconds), clock)
    # Other processes may serve the same viewers: share watching sessions through the store.
    journal = WatchJournal(watch, store, clock) if shared else None
    # Pools whose state the ticker announces are re-read by the grab path.
    ticker = LifecycleTicker(ctx, on_change=desk.invalidate if desk else lambda _: None)
    servicer = Servicer(
        ctx=ctx,
        feeds=feeds,
        ticker=ticker,
        heartbeat_seconds=settings.heartbeat_seconds,
        max_lag_events=settings.stream_max_lag_events,
        gate=AdmissionGate(settings.admission_limit),
        eligibility=EligibilityDesk(ctx, watch, journal),
        desk=desk,
        metrics=metrics,
    )

    reuse = ("grpc.so_reuseport", int(settings.reuse_port))
    options = [reuse if name == reuse[0] else (name, v) for name, v in GRPC_OPTIONS]
    server = grpc.aio.server(options=options)
    handlers = servicer.method_handlers(CallRunner(Authenticator(key), metrics))
    health_servicer = health.aio.HealthServicer()
    add_services(server, SERVICE_NAME, handlers, health_servicer)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise RuntimeError(f"could not bind {settings.host}:{settings.port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(
        server=server,
        port=port,
        store=store,
        feeds=feeds,
        health=health_servicer,
        desk=desk,
        metrics=metrics,
    )
    if metrics is not None:
        metrics.track_open_streams(feeds.open_streams)
        try:
            running.metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError:
            await running.stop(0)  # the port is taken: leave nothing running behind
            raise
    if desk is not None:
        running.writer = asyncio.create_task(desk.run(), name="grant-writer")
    running.tasks.append(asyncio.create_task(ticker.run(), name="lifecycle"))
    if journal is not None:
        running.tasks.append(asyncio.create_task(journal.run(), name="watch-journal"))
    retention = timedelta(seconds=settings.event_retention_seconds)
    running.tasks.append(asyncio.create_task(prune_forever(ctx, retention), name="prune"))
    log.info(
        "liveresource serving on %s:%d (database %s)",
        settings.host,
        port,
        _redact(settings.resolved_database_url()),
    )
    return running


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
