"""Pin, unpin and resend on the room stream, and claim windows relative to the push."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from client_sdk import (
    AsyncLiveResourceClient,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    RoomSubscription,
)
from generated.liveresource.v1 import events_pb2 as ev
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomFixture, RoomMaker, ServerHandle
from tests.support import duration, fixed_pool, later, room_message, unique


async def next_event(sub: RoomSubscription) -> ev.RoomEvent:
    item = await asyncio.wait_for(anext(aiter(sub)), 5.0)
    assert item.WhichOneof("payload") == "event", item
    return item.event


async def snapshot_of(client: AsyncLiveResourceClient, room_id: str) -> ev.RoomSnapshot:
    async with client.subscribe(room_id) as sub:
        item = await asyncio.wait_for(anext(aiter(sub)), 5.0)
    assert item.WhichOneof("payload") == "snapshot"
    return item.snapshot


async def create(room: RoomFixture, pool: svc.CreatePool) -> res.Pool:
    return (await room.streamer.configure_resources(room.room_id, create_pool=pool)).pool


def violation(error: FailedPreconditionError) -> str:
    return error.precondition_violations[0].type


async def test_pin_and_unpin_are_events_and_one_pool_is_pinned(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    viewer = clients("viewer", unique("fan"))
    a, b = (
        await create(room, fixed_pool(room.room_id)),
        await create(room, fixed_pool(room.room_id)),
    )
    async with viewer.subscribe(room.room_id) as sub:
        await asyncio.wait_for(anext(aiter(sub)), 5.0)  # the snapshot
        pinned_a = (
            await room.streamer.configure_resources(
                room.room_id, pin_pool=svc.PinPool(pool_id=a.pool_id, expected_version=a.version)
            )
        ).pool
        assert pinned_a.pinned and pinned_a.version == a.version + 1
        event = await next_event(sub)
        assert event.WhichOneof("kind") == "pool_pinned" and event.pool_pinned.pool.pinned
        assert event.pool_id == a.pool_id
        # Pinning B unpins A in the same commit: two events, A's first.
        pinned_b = (
            await room.streamer.configure_resources(
                room.room_id, pin_pool=svc.PinPool(pool_id=b.pool_id, expected_version=b.version)
            )
        ).pool
        off, on = await next_event(sub), await next_event(sub)
        assert (off.WhichOneof("kind"), off.pool_id) == ("pool_unpinned", a.pool_id)
        assert not off.pool_unpinned.pool.pinned
        assert (on.WhichOneof("kind"), on.pool_id) == ("pool_pinned", b.pool_id)
        assert on.previous_lifecycle_sequence == off.sequence
        snapshot = await snapshot_of(clients("viewer", unique("late")), room.room_id)
        assert {p.pool_id: p.pinned for p in snapshot.pools} == {a.pool_id: False, b.pool_id: True}

        unpinned = (
            await room.streamer.configure_resources(
                room.room_id,
                unpin_pool=svc.UnpinPool(pool_id=b.pool_id, expected_version=pinned_b.version),
            )
        ).pool
        assert not unpinned.pinned
        assert (await next_event(sub)).WhichOneof("kind") == "pool_unpinned"
    with pytest.raises(FailedPreconditionError) as again:
        await room.streamer.configure_resources(
            room.room_id,
            unpin_pool=svc.UnpinPool(pool_id=b.pool_id, expected_version=unpinned.version),
        )
    assert violation(again.value) == "POOL_NOT_PINNED"
    with pytest.raises(ConflictError):  # ABORTED: a stale version
        await room.streamer.configure_resources(
            room.room_id, pin_pool=svc.PinPool(pool_id=b.pool_id, expected_version=b.version)
        )


async def test_pins_racing_in_one_room_leave_one_pool_pinned(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pools = [await create(room, fixed_pool(room.room_id)) for _ in range(6)]
    pinned = await asyncio.gather(
        *(
            room.streamer.configure_resources(
                room.room_id, pin_pool=svc.PinPool(pool_id=p.pool_id, expected_version=p.version)
            )
            for p in pools
        )
    )
    assert all(answer.pool.pinned for answer in pinned)
    snapshot = await snapshot_of(clients("viewer", unique("fan")), room.room_id)
    assert sum(p.pinned for p in snapshot.pools) == 1


async def test_a_stopped_pool_is_resent_as_a_new_round(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = await create(room, fixed_pool(room.room_id, total=5))
    first = clients("viewer", unique("first"))
    assert (await first.allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    with pytest.raises(FailedPreconditionError) as still_open:
        await room.streamer.configure_resources(
            room.room_id,
            resend_pool=svc.ResendPool(pool_id=pool.pool_id, expected_version=pool.version),
        )
    assert violation(still_open.value) == "POOL_NOT_CLOSED"
    pinned = (
        await room.streamer.configure_resources(
            room.room_id, pin_pool=svc.PinPool(pool_id=pool.pool_id, expected_version=pool.version)
        )
    ).pool
    stopped = (
        await room.streamer.configure_resources(
            room.room_id,
            stop_pool=svc.StopPool(pool_id=pool.pool_id, expected_version=pinned.version),
        )
    ).pool
    assert stopped.state == res.POOL_STATE_CLOSED and stopped.withdrawn_quantity == 4
    assert not stopped.pinned  # closing unpins

    async with first.subscribe(room.room_id) as sub:
        snapshot = await asyncio.wait_for(anext(aiter(sub)), 5.0)
        assert list(snapshot.snapshot.pools) == []  # closed pools are not in the snapshot
        resent = (
            await room.streamer.configure_resources(
                room.room_id,
                resend_pool=svc.ResendPool(pool_id=pool.pool_id, expected_version=stopped.version),
            )
        ).pool
        assert (resent.round, resent.state) == (2, res.POOL_STATE_OPEN)
        assert (resent.total_quantity, resent.remaining_quantity) == (5, 4)
        assert resent.withdrawn_quantity == 0
        event = await next_event(sub)
        assert event.WhichOneof("kind") == "pool_resent"
        assert event.pool_resent.pool.round == 2 and event.pool_resent.pool.remaining_quantity == 4
    # The per-viewer limit holds across rounds; others grab the new round.
    assert (await first.allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_LIMIT_REACHED
    second = await clients("viewer", unique("second")).allocate(pool.pool_id)
    assert second.outcome == svc.ALLOCATION_OUTCOME_GRANTED and second.coupon.grant_sequence == 2
    stats = await room.streamer.get_pool_stats(room.room_id, pool.pool_id)
    assert (stats.total_quantity, stats.remaining_quantity, stats.held_quantity) == (5, 3, 2)


async def test_a_sold_out_pool_has_nothing_to_resend(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = await create(room, fixed_pool(room.room_id, total=1))
    assert (
        await clients("viewer", unique("v")).allocate(pool.pool_id)
    ).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    stopped = (
        await room.streamer.configure_resources(
            room.room_id,
            stop_pool=svc.StopPool(pool_id=pool.pool_id, expected_version=pool.version),
        )
    ).pool
    with pytest.raises(FailedPreconditionError) as empty:
        await room.streamer.configure_resources(
            room.room_id,
            resend_pool=svc.ResendPool(pool_id=pool.pool_id, expected_version=stopped.version),
        )
    assert violation(empty.value) == "NOTHING_TO_RESEND"


async def test_a_claim_duration_excludes_an_end_and_must_be_in_range(make_room: RoomMaker) -> None:
    room = await make_room()
    both = fixed_pool(room.room_id, end=later(600))
    both.claim_duration.CopyFrom(duration(60))
    short = fixed_pool(room.room_id)
    short.claim_duration.CopyFrom(duration(1))
    for pool in (both, short):
        with pytest.raises(InvalidArgumentError) as bad:
            await create(room, pool)
        assert [v.field for v in bad.value.field_violations] == ["create_pool.claim_duration"]


# --- a server of its own: its clock moves ------------------------------------------------


async def test_a_pool_is_claimable_for_its_duration_after_each_push(
    clock_server: ServerHandle, client_factory: Callable[..., AsyncLiveResourceClient]
) -> None:
    target = clock_server.target
    room_id, streamer_id = unique("room"), unique("streamer")
    await client_factory("platform", "p", target=target).register_room(
        room_message(room_id, streamer_id)
    )
    streamer = client_factory("streamer", streamer_id, target=target)
    viewer = client_factory("viewer", unique("fan"), target=target)
    # Scheduled: the push is its start, and its window ends 60 s after that.
    start = later(120)
    scheduled = fixed_pool(room_id, total=3, start=start)
    scheduled.claim_duration.CopyFrom(duration(60))
    pool = (await streamer.configure_resources(room_id, create_pool=scheduled)).pool
    assert pool.claim_duration.seconds == 60
    assert pool.claim_end_time.seconds - pool.claim_start_time.seconds == 60
    assert pool.claim_start_time.seconds == int(start.timestamp())

    async with viewer.subscribe(room_id) as sub:
        await asyncio.wait_for(anext(aiter(sub)), 5.0)
        clock_server.clock.advance(121)
        assert (await next_event(sub)).WhichOneof("kind") == "pool_opened"
        assert (await viewer.allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
        assert (await next_event(sub)).WhichOneof("kind") == "stock_changed"
        clock_server.clock.advance(60)
        closed = await next_event(sub)
        assert closed.pool_closed.reason == ev.CLOSE_REASON_WINDOW_ENDED
        late = await client_factory("viewer", unique("late"), target=target).allocate(pool.pool_id)
        assert late.outcome == svc.ALLOCATION_OUTCOME_CLOSED

        # Resent: a new window of the same length from the resend.
        current = (await snapshot_of(viewer, room_id)).pools
        assert current == []
        resent = (
            await streamer.configure_resources(
                room_id,
                resend_pool=svc.ResendPool(pool_id=pool.pool_id, expected_version=pool.version),
            )
        ).pool
        assert resent.claim_end_time.seconds - resent.claim_start_time.seconds == 60
        assert resent.round == 2
        assert (await next_event(sub)).WhichOneof("kind") == "pool_resent"
        clock_server.clock.advance(61)
        assert (await next_event(sub)).pool_closed.reason == ev.CLOSE_REASON_WINDOW_ENDED
