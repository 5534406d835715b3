"""The `subscribe` scenario: many subscribers to one room while its pools change.

A server of its own (so its memory is measured cleanly) gets `subscribers` room streams from
spawned subscriber processes, each multiplexing its share over a few channels. With all of
them holding their snapshot, the bench measures the server's RSS, then drives changes through
the public API: a second pool opens, thousands of viewers grab the first one until it sells
out, stock is added to the second, and the second is stopped. Every stream checks what it
gets: sequence numbers that only grow (a number at or below the last one applied is a
duplicate, one below the previous message's is out of order), the lifecycle chain
(`previous_lifecycle_sequence` above the last applied means an event was lost), every
lifecycle event the store holds delivered, and the last word on stock (a stock change, or a
sell-out: stock 0) equal to the store's.
Fan-out latency is arrival time minus the event's commit time (`event_time`, same clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
import sqlite3
import time
import traceback
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc

from bench.provision import STREAMER, Provisioner, create_pool_message
from bench.server_process import ServerProcess
from bench.stats import percentile
from client_sdk.tokens import mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc

CHANNELS_PER_PROCESS = 8
GRABS_IN_FLIGHT = 1_000
"""Taps arrive over the sell-out, not all in one instant (the burst scenario does that)."""
FINISH_TIMEOUT_S = 60.0
KEYS = (
    "subscribers",
    "rss_per_subscriber_kb",
    "fanout_p50_ms",
    "fanout_p99_ms",
    "events_lost",
    "events_duplicated",
    "events_out_of_order",
    "snapshots_lagging",
    "stock_final_wrong",
)


@dataclass(kw_only=True)
class SubscribeResult:
    """What the scenario measured (the KEYS) and whether it passes its gate."""

    subscribers_target: int
    subscribers: int = 0
    rss_per_subscriber_kb: float = 0.0
    fanout_p50_ms: float = 0.0
    fanout_p99_ms: float = 0.0
    events_lost: int = 0
    events_duplicated: int = 0
    events_out_of_order: int = 0
    snapshots_lagging: int = 0
    stock_final_wrong: int = 0
    events_in_store: int = 0
    events_delivered: int = 0
    subscribe_s: float = 0.0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    per_event: list[str] = field(default_factory=list)
    """Fan-out by event delivered: sequence, kind, streams, p50 and p99."""

    @property
    def ok(self) -> bool:
        return (
            not self.failures
            and self.subscribers == self.subscribers_target
            and self.events_lost == 0
            and self.events_duplicated == 0
            and self.events_out_of_order == 0
            and self.stock_final_wrong == 0
        )

    def summary(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in KEYS}


# --- in a subscriber process --------------------------------------------------------------


class _Stream:
    """What one subscriber has seen, checked message by message."""

    __slots__ = (
        "dup",
        "first",
        "lagging",
        "last_stock",
        "lifecycle",
        "lost",
        "ooo",
        "position",
        "prev",
    )

    def __init__(self) -> None:
        self.first = -1  # sequence of the first snapshot
        self.position = -1  # last sequence applied (-1: no snapshot yet)
        self.prev = -1  # sequence of the previous message, for out-of-order
        self.dup = self.ooo = self.lost = self.lagging = 0
        self.lifecycle: list[int] = []
        self.last_stock: tuple[int, int] = (0, -1)  # (sequence, remaining)


Latency = tuple[int, str, float]
"""An event's sequence, kind and its fan-out latency to one stream (seconds)."""
_METHOD = "/liveresource.v1.ResourceAllocationService/StreamAllocationInfo"
_parse = svc.StreamAllocationInfoResponse.FromString


async def _follow(
    channel: grpc.aio.Channel,
    request: bytes,
    metadata: tuple[tuple[str, str], ...],
    state: _Stream,
    latencies: list[Latency],
    ready: asyncio.Event,
    caught_up: asyncio.Event,
    progress: dict[str, int],
) -> None:
    # Raw bytes, parsed here: the arrival time is taken before this process's own work.
    call = channel.unary_stream(_METHOD)(request, metadata=metadata)
    async for raw in call:
        arrived = time.time()
        message = _parse(raw)
        kind = message.WhichOneof("payload")
        if kind == "snapshot":
            if state.position >= 0:
                state.lagging += 1
            else:
                state.first = message.snapshot.sequence
            state.position = state.prev = message.snapshot.sequence
            if state.position >= progress["final"]:
                _caught(progress, caught_up)
            if progress["ready"] < progress["target"]:
                progress["ready"] += 1
                if progress["ready"] == progress["target"]:
                    ready.set()
            continue
        if kind != "event":
            continue
        event = message.event
        seq = event.sequence
        if seq < state.prev:
            state.ooo += 1
        state.prev = seq
        if seq <= state.position:
            state.dup += 1
            continue
        if event.previous_lifecycle_sequence > state.position:
            state.lost += 1
        state.position = seq
        if seq >= progress["final"]:
            _caught(progress, caught_up)
        sent = event.event_time.seconds + event.event_time.nanos / 1e9
        event_kind = event.WhichOneof("kind")
        latencies.append((seq, str(event_kind), arrived - sent))
        if event_kind == "stock_changed":
            state.last_stock = (seq, event.stock_changed.remaining_quantity)
        else:
            state.lifecycle.append(seq)
            if event_kind == "pool_sold_out":  # stock 0; the change to 0 before it is coalesced
                state.last_stock = (seq, 0)


def _caught(progress: dict[str, int], caught_up: asyncio.Event) -> None:
    progress["caught"] += 1
    if progress["caught"] >= progress["target"]:
        caught_up.set()


async def _subscriber(conn: Connection, target: str, token: str, room_id: str, n: int) -> None:
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS_PER_PROCESS)
    ]
    metadata = (("authorization", f"Bearer {token}"),)
    request = svc.StreamAllocationInfoRequest(room_id=room_id).SerializeToString()
    states = [_Stream() for _ in range(n)]
    latencies: list[Latency] = []
    ready = asyncio.Event()
    progress = {"ready": 0, "target": n, "final": 1 << 62, "caught": 0}
    caught_up = asyncio.Event()
    tasks = [
        asyncio.ensure_future(
            _follow(
                channels[i % len(channels)],
                request,
                metadata,
                s,
                latencies,
                ready,
                caught_up,
                progress,
            )
        )
        for i, s in enumerate(states)
    ]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), 120)
        open_streams = sum(1 for t in tasks if not t.done())
        conn.send(("ready", progress["ready"]))
        final_seq, lifecycle, stock = await asyncio.to_thread(conn.recv)
        progress["final"] = final_seq
        for s in states:
            if s.position >= final_seq:
                _caught(progress, caught_up)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caught_up.wait(), FINISH_TIMEOUT_S)
        still_open = sum(1 for t in tasks if not t.done())
        result = {
            "subscribed": progress["ready"],
            "open": min(open_streams, still_open),
            "lost": sum(
                s.lost
                + len({x for x in lifecycle if x > s.first} - set(s.lifecycle))
                + (s.position < final_seq)
                for s in states
            ),
            "dup": sum(s.dup for s in states),
            "ooo": sum(s.ooo for s in states),
            "lagging": sum(s.lagging for s in states),
            "stock_wrong": sum(s.last_stock != stock for s in states),
            "delivered": len(latencies),
            "latencies": latencies,
            "errors": [repr(t.exception())[:200] for t in tasks if t.done() and t.exception()][:5],
        }
        conn.send(("result", result))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()


def subscriber_main(conn: Connection, target: str, token: str, room_id: str, n: int) -> None:
    """Process entry point: `n` subscriptions to the room, report when asked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_subscriber(conn, target, token, room_id, n))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


# --- in the bench process -----------------------------------------------------------------


def run(
    work: Path, token_key: str, subscribers: int, grabs: int, processes: int
) -> SubscribeResult:
    """Start a server, subscribe, drive the changes, collect every subscriber's checks."""
    started = time.perf_counter()
    result = SubscribeResult(subscribers_target=subscribers)
    server = ServerProcess("subscribe", work / "subscribe", token_key, batching=True)
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    conns: list[Connection] = []
    try:
        server.start()
        server.wait_serving()
        setup = Provisioner(server.target, token_key)
        room_id = f"subscribe-{uuid.uuid4().hex[:8]}"
        pool_a = setup.pool(room_id, grabs * 2 // 3)
        setup.close()
        assert server.proc is not None
        pid = server.proc.pid
        rss_before = rss(pid)
        t0 = time.perf_counter()
        token = mint_token("bench-watcher", "viewer", key=token_key)
        shares = [
            subscribers // processes + (i < subscribers % processes) for i in range(processes)
        ]
        for share in shares:
            parent_end, child_end = ctx.Pipe()
            child = ctx.Process(
                target=subscriber_main,
                args=(child_end, server.target, token, room_id, share),
                daemon=True,
            )
            child.start()
            child_end.close()
            procs.append(child)
            conns.append(parent_end)
        ready = [_expect(c, "ready") for c in conns]
        result.subscribe_s = round(time.perf_counter() - t0, 2)
        subscribed = int(sum(ready))
        rss_all = rss(pid)
        if subscribed:
            result.rss_per_subscriber_kb = round((rss_all - rss_before) / subscribed / 1024, 2)
        asyncio.run(_changes(server.target, token_key, room_id, pool_a, grabs))
        final_seq, lifecycle, stock, stored = _store_events(server.db_path, room_id)
        result.events_in_store = stored
        for conn in conns:
            conn.send((final_seq, lifecycle, stock))
        outcomes = [_expect(c, "result") for c in conns]
        per_event: dict[tuple[int, str], list[float]] = {}
        for o in outcomes:
            for seq, kind, latency in o["latencies"]:
                per_event.setdefault((seq, kind), []).append(latency)
        latencies = [x for xs in per_event.values() for x in xs]
        result.per_event = [
            f"event {seq} {kind}: {len(xs)} streams, fan-out p50 "
            f"{percentile(xs, 50) * 1000:.0f} ms, p99 {percentile(xs, 99) * 1000:.0f} ms"
            f" (first {min(xs) * 1000:.0f} ms)"
            for (seq, kind), xs in sorted(per_event.items())
        ]
        result.subscribers = sum(o["open"] for o in outcomes)
        result.events_lost = sum(o["lost"] for o in outcomes)
        result.events_duplicated = sum(o["dup"] for o in outcomes)
        result.events_out_of_order = sum(o["ooo"] for o in outcomes)
        result.snapshots_lagging = sum(o["lagging"] for o in outcomes)
        result.stock_final_wrong = sum(o["stock_wrong"] for o in outcomes)
        result.events_delivered = len(latencies)
        result.failures.extend(e for o in outcomes for e in o["errors"])
        if latencies:
            result.fanout_p50_ms = round(percentile(latencies, 50) * 1000, 1)
            result.fanout_p99_ms = round(percentile(latencies, 99) * 1000, 1)
    except Exception as exc:  # reported in the gate, the bench goes on to print
        result.failures.append(f"subscribe: {type(exc).__name__}: {exc}"[:500])
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in conns:
            conn.close()
        server.terminate()
        server.stop(timeout=10)
        result.wall_s = round(time.perf_counter() - started, 1)
    return result


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _expect(conn: Connection, kind: str) -> Any:
    if not conn.poll(180):
        raise RuntimeError(f"a subscriber process sent no {kind!r} within 180 s")
    tag, payload = conn.recv()
    if tag != kind:
        raise RuntimeError(f"subscriber process sent {tag!r}: {str(payload)[-2000:]}")
    return payload


async def _changes(target: str, token_key: str, room_id: str, pool_a: str, grabs: int) -> None:
    """A pool opens, the other sells out under grabs, stock is added, a pool is stopped."""
    streamer = (("authorization", f"Bearer {mint_token(STREAMER, 'streamer', key=token_key)}"),)
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(4)
    ]
    stubs = [svc_grpc.ResourceAllocationServiceStub(c) for c in channels]
    # Minted before the first change: the load's own work stays out of the measured window.
    tokens = [mint_token(f"subscribe-v{i}", "viewer", key=token_key) for i in range(grabs)]
    try:
        created = await stubs[0].ConfigureResources(
            svc.ConfigureResourcesRequest(
                request_id=str(uuid.uuid4()), room_id=room_id, create_pool=_pool_b(room_id)
            ),
            metadata=streamer,
            timeout=60,
        )
        pool_b = created.pool

        in_flight = asyncio.Semaphore(GRABS_IN_FLIGHT)

        async def grab(i: int, token: str) -> None:
            async with in_flight:
                await stubs[i % len(stubs)].Allocate(
                    svc.AllocateRequest(request_id=str(uuid.uuid4()), pool_id=pool_a),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=120,
                )

        await asyncio.gather(*(grab(i, token) for i, token in enumerate(tokens)))
        added = await stubs[0].ConfigureResources(
            svc.ConfigureResourcesRequest(
                request_id=str(uuid.uuid4()),
                room_id=room_id,
                add_stock=svc.AddStock(
                    pool_id=pool_b.pool_id, expected_version=pool_b.version, quantity=10
                ),
            ),
            metadata=streamer,
            timeout=60,
        )
        await stubs[0].ConfigureResources(
            svc.ConfigureResourcesRequest(
                request_id=str(uuid.uuid4()),
                room_id=room_id,
                stop_pool=svc.StopPool(pool_id=pool_b.pool_id, expected_version=added.pool.version),
            ),
            metadata=streamer,
            timeout=60,
        )
    finally:
        for channel in channels:
            await channel.close()


def _pool_b(room_id: str) -> svc.CreatePool:
    return create_pool_message(room_id, 100)


def _store_events(db: Path, room_id: str) -> tuple[int, list[int], tuple[int, int], int]:
    """From the store: last sequence, lifecycle sequences, last stock event, event count."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, kind, payload FROM room_events WHERE room_id = ? ORDER BY seq",
            (room_id,),
        ).fetchall()
    finally:
        conn.close()
    lifecycle = [int(seq) for seq, kind, _ in rows if kind != "stock_changed"]
    # The room's last word on stock: a stock change, or a sell-out (stock 0).
    stock = [
        (int(seq), kind, payload)
        for seq, kind, payload in rows
        if kind in ("stock_changed", "pool_sold_out")
    ]
    last_stock = (0, -1)
    if stock:
        seq, kind, payload = stock[-1]
        last_stock = (seq, 0 if kind == "pool_sold_out" else _remaining(payload))
    return (int(rows[-1][0]) if rows else 0), lifecycle, last_stock, len(rows)


def _remaining(payload: str) -> int:
    return int(json.loads(payload)["remaining_quantity"])
