"""Who may grab: followers, new followers, new buyers and watch time, over real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from client_sdk import (
    AsyncLiveResourceClient,
    InvalidArgumentError,
    RoomSubscription,
    UnauthenticatedError,
    mint_token,
)
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomFixture, RoomMaker, ServerHandle, launch
from tests.pg import Databases
from tests.support import TOKEN_KEY, duration, fixed_pool, new_request_id, room_message, unique

DAY = 86400


def rule_pool(room_id: str, **rule: object) -> svc.CreatePool:
    pool = fixed_pool(room_id, total=20)
    durations = {k: v for k, v in rule.items() if k.startswith(("min_", "max_"))}
    flags = {k: v for k, v in rule.items() if k not in durations}
    pool.eligibility.CopyFrom(res.Eligibility(**flags))  # type: ignore[arg-type]
    for name, seconds in durations.items():
        getattr(pool.eligibility, name).CopyFrom(duration(int(seconds)))  # type: ignore[call-overload]
    return pool


def viewer(
    clients: ClientFactory,
    *,
    follows: dict[str, float] | None = None,
    bought_from: list[str] | None = None,
    subject: str | None = None,
) -> AsyncLiveResourceClient:
    subject = subject or unique("viewer")
    token = mint_token(subject, "viewer", key=TOKEN_KEY, follows=follows, bought_from=bought_from)
    return clients("viewer", subject, token=token)


def gaps(answer: svc.AllocateResponse) -> list[int]:
    return [m.gap for m in answer.missing]


async def create(room: RoomFixture, pool: svc.CreatePool) -> res.Pool:
    return (await room.streamer.configure_resources(room.room_id, create_pool=pool)).pool


async def test_followers_only(make_room: RoomMaker, clients: ClientFactory) -> None:
    room = await make_room()
    pool = await create(room, rule_pool(room.room_id, followers_only=True))
    assert pool.eligibility.followers_only
    now = time.time()
    stranger = await viewer(clients).allocate(pool.pool_id)
    assert stranger.outcome == svc.ALLOCATION_OUTCOME_NOT_ELIGIBLE
    assert gaps(stranger) == [res.ELIGIBILITY_GAP_NOT_FOLLOWER]
    assert stranger.missing[0].description == "follow the streamer"
    elsewhere = await viewer(clients, follows={"someone-else": now}).allocate(pool.pool_id)
    assert gaps(elsewhere) == [res.ELIGIBILITY_GAP_NOT_FOLLOWER]
    fan = await viewer(clients, follows={room.streamer_id: now - 60}).allocate(pool.pool_id)
    assert fan.outcome == svc.ALLOCATION_OUTCOME_GRANTED


async def test_followed_long_enough_and_new_followers(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    loyal = await create(room, rule_pool(room.room_id, followers_only=True, min_follow_age=7 * DAY))
    fresh = await create(room, rule_pool(room.room_id, followers_only=True, max_follow_age=2 * DAY))
    now = time.time()
    recent = viewer(clients, follows={room.streamer_id: now - DAY})
    too_soon = await recent.allocate(loyal.pool_id)
    assert gaps(too_soon) == [res.ELIGIBILITY_GAP_FOLLOWED_TOO_RECENTLY]
    assert abs(too_soon.missing[0].remaining.seconds - 6 * DAY) < 60
    assert (await recent.allocate(fresh.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    old_fan = viewer(clients, follows={room.streamer_id: now - 8 * DAY})
    assert (await old_fan.allocate(loyal.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    assert gaps(await old_fan.allocate(fresh.pool_id)) == [res.ELIGIBILITY_GAP_NOT_NEW_FOLLOWER]


async def test_new_buyers_only(make_room: RoomMaker, clients: ClientFactory) -> None:
    room = await make_room()
    pool = await create(room, rule_pool(room.room_id, new_buyers_only=True))
    # shop-b is the room's linked shop (tests.support.room_message).
    repeat = await viewer(clients, bought_from=["shop-b"]).allocate(pool.pool_id)
    assert gaps(repeat) == [res.ELIGIBILITY_GAP_NOT_NEW_BUYER]
    first = await viewer(clients, bought_from=["elsewhere"]).allocate(pool.pool_id)
    assert first.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    assert (await viewer(clients).allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED


async def test_a_granted_request_id_keeps_its_grant_when_no_longer_eligible(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = await create(room, rule_pool(room.room_id, followers_only=True))
    subject, request_id = unique("viewer"), new_request_id()
    following = viewer(clients, subject=subject, follows={room.streamer_id: time.time()})
    granted = await following.allocate(pool.pool_id, request_id=request_id)
    assert granted.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    unfollowed = viewer(clients, subject=subject)
    again = await unfollowed.allocate(pool.pool_id, request_id=request_id)
    assert again.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    assert again.coupon.code == granted.coupon.code
    # A new tap is decided on what holds now.
    assert gaps(await unfollowed.allocate(pool.pool_id)) == [res.ELIGIBILITY_GAP_NOT_FOLLOWER]


async def test_rules_are_validated(make_room: RoomMaker) -> None:
    room = await make_room()
    cases = {
        "create_pool.eligibility.min_follow_age": rule_pool(room.room_id, min_follow_age=DAY),
        "create_pool.eligibility.max_follow_age": rule_pool(
            room.room_id, followers_only=True, min_follow_age=2 * DAY, max_follow_age=DAY
        ),
        "create_pool.eligibility.min_watch_time": rule_pool(room.room_id, min_watch_time=2 * DAY),
    }
    for field, pool in cases.items():
        with pytest.raises(InvalidArgumentError) as bad:
            await create(room, pool)
        assert [v.field for v in bad.value.field_violations] == [field]


async def test_a_malformed_follows_claim_is_unauthenticated(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = await create(room, fixed_pool(room.room_id))
    token = mint_token("odd", "viewer", key=TOKEN_KEY, follows={"x": "yesterday"})  # type: ignore[dict-item]
    with pytest.raises(UnauthenticatedError):
        await clients("viewer", "odd", token=token).allocate(pool.pool_id)


# --- watch time: a server of its own, whose clock moves ---------------------------------


async def next_payload(sub: RoomSubscription, kind: str) -> svc.StreamAllocationInfoResponse:
    while True:
        item = await asyncio.wait_for(anext(aiter(sub)), 5.0)
        if item.WhichOneof("payload") == kind:
            return item


async def left(server: ServerHandle, room_id: str) -> None:
    """Wait until the server has seen the room's streams end (it notices a cancel late)."""
    for _ in range(500):
        if server.running.feeds.get(room_id) is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the room's streams stayed open on the server")


async def test_watch_time_counts_from_the_subscription_with_short_gaps_tolerated(
    clock_server: ServerHandle, client_factory: Callable[..., AsyncLiveResourceClient]
) -> None:
    target = clock_server.target
    room_id, streamer_id = unique("room"), unique("streamer")
    await client_factory("platform", "p", target=target).register_room(
        room_message(room_id, streamer_id)
    )
    streamer = client_factory("streamer", streamer_id, target=target)
    fan = client_factory("viewer", unique("fan"), target=target)
    first = (
        await streamer.configure_resources(
            room_id, create_pool=rule_pool(room_id, min_watch_time=60)
        )
    ).pool
    # Not subscribed: no watch time at all.
    cold = await fan.allocate(first.pool_id)
    assert gaps(cold) == [res.ELIGIBILITY_GAP_WATCH_TIME]
    assert cold.missing[0].remaining.ToTimedelta().total_seconds() == 60

    async with fan.subscribe(room_id) as sub:
        snapshot = (await next_payload(sub, "snapshot")).snapshot
        [mine] = snapshot.viewer_eligibility
        assert (mine.pool_id, mine.eligible) == (first.pool_id, False)
        assert mine.missing[0].gap == res.ELIGIBILITY_GAP_WATCH_TIME
        clock_server.clock.advance(20)
        halfway = await fan.allocate(first.pool_id)
        assert gaps(halfway) == [res.ELIGIBILITY_GAP_WATCH_TIME]
        assert halfway.missing[0].description == "watch 40 more seconds"
        # A pool with a rule opening later: the stream tells the viewer where they stand.
        second = (
            await streamer.configure_resources(
                room_id, create_pool=rule_pool(room_id, min_watch_time=30)
            )
        ).pool
        update = (await next_payload(sub, "eligibility")).eligibility
        assert [(p.pool_id, p.eligible) for p in update.pools] == [(second.pool_id, False)]
        assert 9 <= update.pools[0].missing[0].remaining.seconds <= 10
    # Gone for 10 s (within the 30 s gap): the session goes on.
    await left(clock_server, room_id)
    clock_server.clock.advance(10)
    async with fan.subscribe(room_id) as sub:
        await next_payload(sub, "snapshot")
        clock_server.clock.advance(31)
        assert (await fan.allocate(first.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    # Gone for longer than the gap: watching starts again from zero.
    other = client_factory("viewer", unique("fan"), target=target)
    async with other.subscribe(room_id) as sub:
        await next_payload(sub, "snapshot")
        clock_server.clock.advance(61)
    await left(clock_server, room_id)
    clock_server.clock.advance(31)
    async with other.subscribe(room_id) as sub:
        snapshot = (await next_payload(sub, "snapshot")).snapshot
        assert {p.pool_id: p.eligible for p in snapshot.viewer_eligibility} == {
            first.pool_id: False,
            second.pool_id: False,
        }
        assert gaps(await other.allocate(second.pool_id)) == [res.ELIGIBILITY_GAP_WATCH_TIME]


# --- several processes on one PostgreSQL database share watch time ----------------------


@pytest.fixture
async def pg_pair(tmp_path: Path) -> AsyncIterator[tuple[ServerHandle, ServerHandle]]:
    """Two servers on one PostgreSQL database, as two processes of one deployment."""
    databases = Databases()
    url = await databases.new_url()
    first = await launch(tmp_path / "a", database_url=url, watch_gap_seconds=30.0)
    second = await launch(tmp_path / "b", database_url=url, watch_gap_seconds=30.0)
    yield first, second
    for handle in (first, second):
        await handle.running.stop(1.0)
    await databases.drop_all()


async def test_watch_time_follows_the_viewer_to_another_process(
    pg_pair: tuple[ServerHandle, ServerHandle],
    client_factory: Callable[..., AsyncLiveResourceClient],
) -> None:
    a, b = pg_pair
    room_id, streamer_id = unique("room"), unique("streamer")
    await client_factory("platform", "p", target=a.target).register_room(
        room_message(room_id, streamer_id)
    )
    streamer = client_factory("streamer", streamer_id, target=a.target)
    pool = (
        await streamer.configure_resources(
            room_id, create_pool=rule_pool(room_id, min_watch_time=60)
        )
    ).pool
    subject = unique("fan")
    on_a = client_factory("viewer", subject, target=a.target)
    on_b = client_factory("viewer", subject, target=b.target)
    async with on_a.subscribe(room_id) as sub:
        await next_payload(sub, "snapshot")
        for handle in (a, b):
            handle.clock.advance(61)
        # B never saw the viewer's stream: it learns the session from A's journal (new
        # sessions within a second; should A have written it before the clocks moved, its
        # lease looks lapsed until the next renewal, within 10 s).
        for _ in range(150):
            answer = await on_b.allocate(pool.pool_id)
            if answer.outcome == svc.ALLOCATION_OUTCOME_GRANTED:
                break
            assert gaps(answer) == [res.ELIGIBILITY_GAP_WATCH_TIME]
            await asyncio.sleep(0.1)
        assert answer.outcome == svc.ALLOCATION_OUTCOME_GRANTED
