"""The streamer's winner list and live counts, and the conservation identity under races."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from client_sdk import (
    AsyncLiveResourceClient,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomFixture, RoomMaker
from tests.support import CURRENCY, fixed_pool, unique


def assert_conserved(stats: res.PoolStats) -> None:
    parts = (
        stats.held_quantity,
        stats.locked_quantity,
        stats.redeemed_quantity,
        stats.released_quantity,
        stats.expired_quantity,
    )
    assert min(parts) >= 0 and stats.remaining_quantity >= 0, stats
    assert sum(parts) == stats.granted_quantity, stats
    assert stats.remaining_quantity + sum(parts) == stats.total_quantity, stats


async def all_grants(room: RoomFixture, pool_id: str, page_size: int) -> list[res.PoolGrant]:
    grants: list[res.PoolGrant] = []
    token = ""
    while True:
        page = await room.streamer.list_pool_grants(
            room.room_id, pool_id, page_size=page_size, page_token=token
        )
        grants.extend(page.grants)
        token = page.next_page_token
        if not token:
            return grants


async def test_the_winner_list_is_the_order_the_server_decided(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=25)
        )
    ).pool
    viewers = [unique("winner") for _ in range(40)]
    answers = await asyncio.gather(*(clients("viewer", v).allocate(pool.pool_id) for v in viewers))
    won = {
        v: a.coupon
        for v, a in zip(viewers, answers, strict=True)
        if a.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    }
    assert len(won) == 25
    grants = await all_grants(room, pool.pool_id, page_size=7)
    assert [g.sequence for g in grants] == list(range(1, 26))
    assert {g.viewer_id: g.coupon_id for g in grants} == {v: c.coupon_id for v, c in won.items()}
    assert all(won[g.viewer_id].grant_sequence == g.sequence for g in grants)
    times = [(g.grant_time.seconds, g.grant_time.nanos) for g in grants]
    assert times == sorted(times)
    assert {g.state for g in grants} == {res.COUPON_STATE_AVAILABLE}
    stats = await room.streamer.get_pool_stats(room.room_id, pool.pool_id)
    assert (stats.granted_quantity, stats.held_quantity, stats.remaining_quantity) == (25, 25, 0)
    assert_conserved(stats)


async def test_only_the_room_owner_sees_a_pool_report(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room, other = await make_room(), await make_room()
    pool = (
        await room.streamer.configure_resources(room.room_id, create_pool=fixed_pool(room.room_id))
    ).pool
    for call in (
        other.streamer.get_pool_stats(room.room_id, pool.pool_id),
        other.streamer.list_pool_grants(room.room_id, pool.pool_id),
        other.streamer.get_pool_stats(unique("missing-room"), pool.pool_id),
    ):
        with pytest.raises(PermissionDeniedError):
            await call
    # The owner of another room naming this pool under their own room: not found.
    for call in (
        other.streamer.get_pool_stats(other.room_id, pool.pool_id),
        other.streamer.list_pool_grants(other.room_id, pool.pool_id),
    ):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(InvalidArgumentError) as bad:
        await room.streamer.list_pool_grants(room.room_id, pool.pool_id, page_token="x")
    assert [v.field for v in bad.value.field_violations] == ["page_token"]


async def test_counts_add_up_after_a_race_of_grabs_locks_and_releases(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    """Viewers race for the pool, then the order service races over their coupons: locks
    (two orders fighting for some coupons), confirmations, releases and refunds. After each
    race the counts add up and match what the answers said."""
    room = await make_room()
    total = 60
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=total, limit=2)
        )
    ).pool
    viewers = {v: clients("viewer", v) for v in (unique("racer") for _ in range(40))}

    async def grab(viewer_id: str) -> list[tuple[str, res.Coupon]]:
        answers = await asyncio.gather(*(viewers[viewer_id].allocate(pool.pool_id) for _ in "ab"))
        return [
            (viewer_id, a.coupon) for a in answers if a.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        ]

    held = [pair for found in await asyncio.gather(*(grab(v) for v in viewers)) for pair in found]
    assert len(held) == total
    stats = await room.streamer.get_pool_stats(room.room_id, pool.pool_id)
    assert_conserved(stats)
    assert (stats.remaining_quantity, stats.held_quantity) == (0, total)

    orders = clients("order_service", "orders-race")
    rng = random.Random(7)
    plans = ["keep", "lock", "confirm", "release", "refund", "partial", "fight"]
    outcome: Counter[str] = Counter()

    async def checkout(viewer_id: str, coupon: res.Coupon, plan: str) -> None:
        lines = [
            res.OrderLine(
                goods_id=f"{room.room_id}-tea", shop_id="shop-a", unit_price_minor=5000, quantity=1
            )
        ]
        if plan == "keep":
            outcome["held"] += 1
            return
        if plan == "fight":
            order_ids = [unique("order"), unique("order")]
            tries = await asyncio.gather(
                *(
                    orders.lock_coupon(o, coupon.code, viewer_id, CURRENCY, lines)
                    for o in order_ids
                ),
                return_exceptions=True,
            )
            won = [t for t in tries if isinstance(t, svc.LockCouponResponse)]
            lost = [t for t in tries if isinstance(t, FailedPreconditionError)]
            assert (len(won), len(lost)) == (1, 1), tries
            assert lost[0].precondition_violations[0].type == "COUPON_LOCKED"
            outcome["locked"] += 1
            return
        order = unique("order")
        await orders.lock_coupon(order, coupon.code, viewer_id, CURRENCY, lines)
        if plan == "lock":
            outcome["locked"] += 1
            return
        if plan == "release":
            await orders.release_coupon(order, payment_failed=True)
            outcome["released"] += 1
            return
        await orders.confirm_coupons(order)
        if plan == "refund":
            await orders.refund_coupons(order, full=True)
            outcome["released"] += 1
        elif plan == "partial":
            await orders.refund_coupons(order, full=False)
            outcome["redeemed"] += 1
        else:
            outcome["redeemed"] += 1

    async def watch(stop: asyncio.Event) -> int:
        """Counts taken while the race runs add up too."""
        seen = 0
        while not stop.is_set():
            assert_conserved(await room.streamer.get_pool_stats(room.room_id, pool.pool_id))
            seen += 1
            await asyncio.sleep(0.01)
        return seen

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(stop))
    await asyncio.gather(*(checkout(v, c, rng.choice(plans)) for v, c in held))
    stop.set()
    assert await watcher > 0
    stats = await room.streamer.get_pool_stats(room.room_id, pool.pool_id)
    assert_conserved(stats)
    assert {
        "held": stats.held_quantity,
        "locked": stats.locked_quantity,
        "redeemed": stats.redeemed_quantity,
        "released": stats.released_quantity,
    } == {name: outcome[name] for name in ("held", "locked", "redeemed", "released")}
    assert stats.expired_quantity == 0

    # The winner list shows the same states.
    grants = await all_grants(room, pool.pool_id, page_size=1000)
    assert len(grants) == total
    by_state = Counter(g.state for g in grants)
    assert by_state[res.COUPON_STATE_LOCKED] == stats.locked_quantity
    assert by_state[res.COUPON_STATE_REDEEMED] == stats.redeemed_quantity


async def test_identity_holds_when_stock_is_withdrawn(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=10)
        )
    ).pool
    viewer: AsyncLiveResourceClient = clients("viewer", unique("v"))
    assert (await viewer.allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
    stopped = await room.streamer.configure_resources(
        room.room_id,
        stop_pool=svc.StopPool(pool_id=pool.pool_id, expected_version=pool.version),
    )
    stats = await room.streamer.get_pool_stats(room.room_id, pool.pool_id)
    assert_conserved(stats)
    assert (stats.total_quantity, stats.withdrawn_quantity, stats.held_quantity) == (1, 9, 1)
    assert stopped.pool.withdrawn_quantity == 9
