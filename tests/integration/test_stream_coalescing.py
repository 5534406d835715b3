"""Stock changes coalesced on room streams: the latest value at most every interval, every
lifecycle event delivered in order, and a chain that tells a coalesced skip from a loss."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from client_sdk import AsyncLiveResourceClient, ClientConfig, mint_token
from generated.liveresource.v1 import events_pb2, resources_pb2
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from server.domain.models import EventKind, RoomEvent
from tests.conftest import ServerHandle, launch
from tests.support import TOKEN_KEY, fixed_pool, room_message, unique

INTERVAL = 0.25


def _client(target: str, subject: str, role: str) -> AsyncLiveResourceClient:
    return AsyncLiveResourceClient(
        ClientConfig(target=target, token=mint_token(subject, role, key=TOKEN_KEY))
    )


@dataclass
class _Room:
    handle: ServerHandle
    room_id: str
    pool: resources_pb2.Pool
    streamer: AsyncLiveResourceClient
    viewers: list[AsyncLiveResourceClient]


@contextlib.asynccontextmanager
async def _coalescing_room(
    tmp_path: Path, database_url: str, *, total: int, viewers: int, prefix: str
) -> AsyncIterator[_Room]:
    """A server that coalesces stock, a room with one pool of `total`, and viewer clients."""
    handle = await launch(
        tmp_path, database_url=database_url, stock_update_interval_seconds=INTERVAL
    )
    target = handle.target
    room_id, streamer_id = unique("room"), unique("streamer")
    platform = _client(target, "platform", "platform")
    streamer = _client(target, streamer_id, "streamer")
    clients = [_client(target, f"{prefix}-{i}", "viewer") for i in range(viewers)]
    try:
        await platform.register_room(room_message(room_id, streamer_id))
        pool = (
            await streamer.configure_resources(
                room_id, create_pool=fixed_pool(room_id, total=total)
            )
        ).pool
        yield _Room(handle, room_id, pool, streamer, clients)
    finally:
        for client in (platform, streamer, *clients):
            await client.close()
        await handle.running.stop(1.0)


async def _store_events(handle: ServerHandle, room_id: str, after: int) -> list[RoomEvent]:
    async with handle.running.store.transaction(write=False) as tx:
        return await tx.events_after(room_id, after, 10_000)


async def test_stock_is_coalesced_and_every_lifecycle_event_arrives_in_order(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        _coalescing_room(tmp_path, database_url, total=40, viewers=60, prefix="coalesce") as room,
        grpc.aio.insecure_channel(room.handle.target) as channel,
    ):
        handle, room_id, pool = room.handle, room.room_id, room.pool
        streamer, viewers = room.streamer, room.viewers
        call = svc_grpc.ResourceAllocationServiceStub(channel).StreamAllocationInfo(
            svc.StreamAllocationInfoRequest(room_id=room_id),
            metadata=(("authorization", "Bearer " + mint_token("w", "viewer", key=TOKEN_KEY)),),
        )
        first = await call.read()
        start = first.snapshot.sequence
        started = time.monotonic()

        async def grab_in_waves(group: list[AsyncLiveResourceClient]) -> None:
            for i in range(0, len(group), 4):  # many small commits, each with a stock event
                await asyncio.gather(*(v.allocate(pool.pool_id) for v in group[i : i + 4]))

        await grab_in_waves(viewers[:20])
        changed = await streamer.configure_resources(
            room_id,
            add_stock=svc.AddStock(
                pool_id=pool.pool_id, expected_version=pool.version, quantity=20
            ),
        )
        assert changed.pool.remaining_quantity == 40
        await grab_in_waves(viewers[20:])  # the last 20 find it sold out

        delivered: list[events_pb2.RoomEvent] = []
        while not delivered or delivered[-1].WhichOneof("kind") != "pool_sold_out":
            message = await asyncio.wait_for(call.read(), 10)
            if message.WhichOneof("payload") == "event":
                delivered.append(message.event)
        elapsed = time.monotonic() - started
        call.cancel()

        stored = await _store_events(handle, room_id, start)
        by_sequence = {e.sequence: e for e in stored}
        sequences = [e.sequence for e in delivered]
        assert sequences == sorted(set(sequences)), "strictly increasing, no duplicate"
        lifecycle = [e.sequence for e in stored if e.kind is not EventKind.STOCK_CHANGED]
        assert [e.sequence for e in delivered if e.WhichOneof("kind") != "stock_changed"] == (
            lifecycle
        )
        assert [by_sequence[s].kind.value for s in lifecycle] == ["pool_changed", "pool_sold_out"]
        # The chain: no event names a lifecycle event the stream did not deliver before it.
        position = start
        for event in delivered:
            assert event.previous_lifecycle_sequence <= position
            position = event.sequence
        # Coalesced: fewer stock events than the store holds, at most one per publish.
        stock = [e for e in delivered if e.WhichOneof("kind") == "stock_changed"]
        stored_stock = [e for e in stored if e.kind is EventKind.STOCK_CHANGED]
        assert len(stock) < len(stored_stock)
        assert len(stock) <= math.ceil(elapsed / INTERVAL) + 2 * len(lifecycle) + 1
        # Every value delivered is the store's value at that sequence, and the last one is
        # the latest: the stream never shows a stale stock as the final word.
        for event in stock:
            assert event.stock_changed.remaining_quantity == (
                by_sequence[event.sequence].pool.remaining_quantity
            )
        # The change to 0 was committed with the sell-out, which supersedes it (stock 0).
        assert stored_stock[-1].sequence == lifecycle[-1] - 1
        assert stored_stock[-1].pool.remaining_quantity == 0
        assert stock[-1].sequence < stored_stock[-1].sequence
        assert delivered[-1].sequence == lifecycle[-1]


async def test_resume_with_coalescing_replays_lifecycle_events_and_the_latest_stock(
    tmp_path: Path, database_url: str
) -> None:
    async with _coalescing_room(
        tmp_path, database_url, total=8, viewers=8, prefix="replay"
    ) as room:
        handle, room_id, pool, viewers = room.handle, room.room_id, room.pool, room.viewers
        target = handle.target
        async with handle.running.store.transaction(write=False) as tx:
            bounds = await tx.event_bounds(room_id)
        assert bounds is not None
        resume_from = bounds.last  # the app saw everything up to the pool's creation
        for viewer in viewers:  # eight commits while the app is away; the last sells out
            await viewer.allocate(pool.pool_id)

        watcher = _client(target, "watcher", "viewer")
        subscription = watcher.subscribe(room_id, resume_after_sequence=resume_from)
        received: list[events_pb2.RoomEvent] = []
        async for item in subscription:
            assert item.WhichOneof("payload") == "event", "a resume within retention: no snapshot"
            received.append(item.event)
            if item.event.WhichOneof("kind") == "pool_sold_out":
                break
        subscription.close()
        await watcher.close()

        # Eight stock changes coalesced into the sell-out, which says the stock is 0.
        kinds = [e.WhichOneof("kind") for e in received]
        assert kinds == ["pool_sold_out"], kinds
        assert received[0].previous_lifecycle_sequence <= resume_from
        stored = await _store_events(handle, room_id, resume_from)
        assert len(stored) == 9  # eight stock changes and the sell-out, all in the outbox
        assert stored[-2].kind is EventKind.STOCK_CHANGED
        assert stored[-2].pool.remaining_quantity == 0
        assert [e.sequence for e in received] == [stored[-1].sequence]
