"""Room subscriptions: snapshot then events, exact resume, retention, heartbeats, and the
pool lifecycle events that only the clock causes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import grpc

from client_sdk import AsyncLiveResourceClient, mint_token
from generated.liveresource.v1 import events_pb2 as ev
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomMaker, ServerHandle
from tests.support import TOKEN_KEY, TcpProxy, fixed_pool, later, room_message, unique

Read = svc.StreamAllocationInfoResponse


async def raw_stream(
    target: str, room_id: str, resume_after: int = 0
) -> tuple[grpc.aio.Channel, grpc.aio.UnaryStreamCall]:  # type: ignore[type-arg]
    channel = grpc.aio.insecure_channel(target)
    call = svc_grpc.ResourceAllocationServiceStub(channel).StreamAllocationInfo(
        svc.StreamAllocationInfoRequest(room_id=room_id, resume_after_sequence=resume_after),
        metadata=(("authorization", "Bearer " + mint_token("raw", "viewer", key=TOKEN_KEY)),),
    )
    return channel, call


async def read_non_heartbeat(call: grpc.aio.UnaryStreamCall, timeout: float = 5.0) -> Read:  # type: ignore[type-arg]
    while True:
        message = await asyncio.wait_for(call.read(), timeout)
        assert message is not grpc.aio.EOF
        if message.WhichOneof("payload") != "heartbeat":
            return message


async def grab_n(viewers: list[AsyncLiveResourceClient], pool_id: str) -> None:
    for viewer in viewers:
        assert (await viewer.allocate(pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED


async def test_resume_after_a_dropped_connection_gets_exactly_the_missed_events(
    server: ServerHandle, make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=20)
        )
    ).pool
    viewers = [clients("viewer", f"resume-{i}") for i in range(6)]

    channel, call = await raw_stream(server.target, room.room_id)
    snapshot = (await read_non_heartbeat(call)).snapshot
    await grab_n(viewers[:2], pool.pool_id)
    seen = [(await read_non_heartbeat(call)).event.sequence for _ in range(2)]
    assert seen == [snapshot.sequence + 1, snapshot.sequence + 2]
    await channel.close()  # the phone loses its connection

    await grab_n(viewers[2:5], pool.pool_id)  # three grants while it is away

    channel, call = await raw_stream(server.target, room.room_id, resume_after=seen[-1])
    missed = [(await read_non_heartbeat(call)).event for _ in range(3)]
    assert [e.sequence for e in missed] == [seen[-1] + 1, seen[-1] + 2, seen[-1] + 3]
    assert [e.stock_changed.remaining_quantity for e in missed] == [17, 16, 15]
    await grab_n(viewers[5:], pool.pool_id)
    live = (await read_non_heartbeat(call)).event
    assert (live.sequence, live.stock_changed.remaining_quantity) == (seen[-1] + 4, 14)
    await channel.close()


async def test_sdk_subscription_resumes_on_its_own_without_gap_or_duplicate(
    server: ServerHandle, make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=30)
        )
    ).pool
    proxy = TcpProxy("127.0.0.1", server.running.port)
    await proxy.start()
    viewer = clients("viewer", "sdk-resume-watcher", target=proxy.target)
    grabbers = [clients("viewer", f"sdk-resume-{i}") for i in range(10)]
    sequences: list[int] = []
    try:
        async with viewer.subscribe(room.room_id) as sub:
            it = aiter(sub)
            first = await asyncio.wait_for(anext(it), 5)
            sequences.append(first.snapshot.sequence)
            for i, grabber in enumerate(grabbers):
                if i % 3 == 1:
                    proxy.drop_connections()  # the network drops under the subscription
                await grab_n([grabber], pool.pool_id)
                item = await asyncio.wait_for(anext(it), 10)
                sequences.append(item.event.sequence)
            assert sub.reconnects >= 3
    finally:
        await proxy.close()
    assert sequences == list(range(sequences[0], sequences[0] + 11))


async def test_resume_from_pruned_events_gets_a_fresh_snapshot_marked_too_old(
    server: ServerHandle, make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=5)
        )
    ).pool
    await grab_n([clients("viewer", "pruned-1")], pool.pool_id)
    removed = await server.running.store.prune_events(server.clock() + timedelta(seconds=1))
    assert removed >= 2
    channel, call = await raw_stream(server.target, room.room_id, resume_after=1)
    message = await read_non_heartbeat(call)
    assert message.WhichOneof("payload") == "snapshot"
    assert message.snapshot.reason == ev.SNAPSHOT_REASON_RESUME_TOO_OLD
    assert message.snapshot.sequence == 2
    assert message.snapshot.pools[0].remaining_quantity == 4
    # Right after the snapshot, live events continue from its sequence.
    await grab_n([clients("viewer", "pruned-2")], pool.pool_id)
    assert (await read_non_heartbeat(call)).event.sequence == 3
    await channel.close()


async def test_resume_from_a_sequence_the_room_never_had_gets_a_snapshot(
    server: ServerHandle, make_room: RoomMaker
) -> None:
    room = await make_room()
    await room.streamer.configure_resources(room.room_id, create_pool=fixed_pool(room.room_id))
    channel, call = await raw_stream(server.target, room.room_id, resume_after=999)
    message = await read_non_heartbeat(call)
    assert message.snapshot.reason == ev.SNAPSHOT_REASON_RESUME_UNKNOWN
    assert message.snapshot.sequence == 1
    await channel.close()


async def test_idle_stream_gets_heartbeats_with_server_time(
    server: ServerHandle, make_room: RoomMaker
) -> None:
    room = await make_room()
    channel, call = await raw_stream(server.target, room.room_id)
    snapshot = (await call.read()).snapshot
    beat = await asyncio.wait_for(call.read(), 3)
    assert beat.WhichOneof("payload") == "heartbeat"
    assert beat.heartbeat.sequence == snapshot.sequence
    assert beat.heartbeat.server_time.seconds >= snapshot.server_time.seconds
    await channel.close()


async def test_scheduled_pool_opens_and_closes_on_time_with_events(
    clock_server: ServerHandle, client_factory: Callable[..., AsyncLiveResourceClient]
) -> None:
    target = clock_server.target
    room_id, streamer_id = unique("room"), unique("streamer")
    await client_factory("platform", "p", target=target).register_room(
        room_message(room_id, streamer_id)
    )
    streamer = client_factory("streamer", streamer_id, target=target)
    viewer = client_factory("viewer", "early-bird", target=target)
    start = later(120)
    created = (
        await streamer.configure_resources(
            room_id,
            create_pool=fixed_pool(
                room_id, total=3, start=start, end=start + timedelta(seconds=600)
            ),
        )
    ).pool
    assert created.state == res.POOL_STATE_SCHEDULED

    channel, call = await raw_stream(target, room_id)
    snapshot = (await read_non_heartbeat(call)).snapshot
    assert [p.state for p in snapshot.pools] == [res.POOL_STATE_SCHEDULED]
    early = await viewer.allocate(created.pool_id)
    assert early.outcome == svc.ALLOCATION_OUTCOME_NOT_OPEN_YET
    assert early.claim_start_time == created.claim_start_time

    clock_server.clock.advance(121)
    message = await read_non_heartbeat(call)
    opened = message.event
    assert opened.WhichOneof("kind") == "pool_opened", message
    assert opened.pool_opened.pool.state == res.POOL_STATE_OPEN
    assert (await viewer.allocate(created.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    assert (await read_non_heartbeat(call)).event.stock_changed.remaining_quantity == 2

    clock_server.clock.advance(600)
    closed = (await read_non_heartbeat(call)).event
    assert closed.pool_closed.reason == ev.CLOSE_REASON_WINDOW_ENDED
    assert closed.pool_closed.withdrawn_quantity == 2
    late = await client_factory("viewer", "late", target=target).allocate(created.pool_id)
    assert late.outcome == svc.ALLOCATION_OUTCOME_CLOSED
    await channel.close()
