"""The whole mission over real gRPC: register, configure, subscribe, grab, redeem, release."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from client_sdk import FailedPreconditionError, RoomSubscription
from generated.liveresource.v1 import events_pb2 as ev
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomMaker
from tests.support import CURRENCY, fixed_pool, new_request_id


async def next_item(
    sub: RoomSubscription, timeout: float = 5.0
) -> svc.StreamAllocationInfoResponse:
    return await asyncio.wait_for(anext(aiter(sub)), timeout)


async def next_event(sub: RoomSubscription) -> ev.RoomEvent:
    item = await next_item(sub)
    assert item.WhichOneof("payload") == "event", item
    return item.event


async def test_options_list_the_room_goods_with_their_shop_and_ranges(make_room: RoomMaker) -> None:
    room = await make_room()
    options = (await room.streamer.get_configuration_options(room.room_id)).options
    by_id = {g.goods.goods_id: g for g in options.goods}
    assert set(by_id) == {f"{room.room_id}-{n}" for n in ("tea", "cup", "saucer")}
    tea, cup, saucer = (by_id[f"{room.room_id}-{n}"] for n in ("tea", "cup", "saucer"))
    assert (tea.featured, tea.from_linked_shop, tea.goods.shop_id) == (True, False, "shop-a")
    assert (cup.featured, cup.from_linked_shop, cup.goods.shop_id) == (True, True, "shop-b")
    assert (saucer.featured, saucer.from_linked_shop) == (False, True)
    assert [s.shop_id for s in options.shops] == ["shop-b"]
    assert set(options.coupon_kinds) == {res.COUPON_KIND_FIXED_AMOUNT, res.COUPON_KIND_PERCENT_OFF}
    assert options.currency_code == CURRENCY
    assert 1 <= options.quantity.min <= options.quantity.max
    assert options.min_validity.seconds > 0


async def test_full_flow_from_configuration_to_release(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    viewer = clients("viewer", "flow-viewer-1")
    other = clients("viewer", "flow-viewer-2")
    orders = clients("order_service", "orders")

    async with viewer.subscribe(room.room_id) as sub:
        first = await next_item(sub)
        assert first.WhichOneof("payload") == "snapshot"
        assert first.snapshot.reason == ev.SNAPSHOT_REASON_INITIAL
        assert list(first.snapshot.pools) == []
        assert first.snapshot.server_time.seconds > 0

        created = await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=2, min_spend=5000)
        )
        pool = created.pool
        assert pool.state == res.POOL_STATE_OPEN and pool.version == 1
        assert (pool.total_quantity, pool.remaining_quantity) == (2, 2)

        opened = await next_event(sub)
        assert opened.sequence == first.snapshot.sequence + 1
        assert opened.WhichOneof("kind") == "pool_opened"
        assert opened.pool_opened.pool.pool_id == pool.pool_id
        assert opened.pool_opened.pool.terms.amount_off_minor == 2000

        grant = await viewer.allocate(pool.pool_id)
        assert grant.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        coupon = grant.coupon
        assert len(coupon.code) >= 22 and coupon.viewer_id == "flow-viewer-1"
        assert list(coupon.target.goods_ids) == [f"{room.room_id}-tea"]
        assert coupon.valid_until.seconds - coupon.valid_from.seconds == 1800
        assert coupon.state == res.COUPON_STATE_AVAILABLE

        stock = await next_event(sub)
        assert stock.WhichOneof("kind") == "stock_changed"
        assert stock.stock_changed.remaining_quantity == 1
        assert stock.sequence == opened.sequence + 1

        second = await other.allocate(pool.pool_id)
        assert second.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        sold_out = await viewer.allocate(pool.pool_id)
        assert sold_out.outcome == svc.ALLOCATION_OUTCOME_SOLD_OUT
        kinds = [(await next_event(sub)).WhichOneof("kind") for _ in range(2)]
        assert kinds == ["stock_changed", "pool_sold_out"]

    listed = await viewer.list_coupons()
    assert [c.code for c in listed.coupons] == [coupon.code]

    tea = res.OrderLine(
        goods_id=f"{room.room_id}-tea", shop_id="shop-a", unit_price_minor=3000, quantity=2
    )
    saucer = res.OrderLine(
        goods_id=f"{room.room_id}-saucer", shop_id="shop-b", unit_price_minor=9999, quantity=1
    )
    with pytest.raises(FailedPreconditionError) as below_min:
        await orders.redeem_coupon(
            "order-small",
            coupon.code,
            "flow-viewer-1",
            CURRENCY,
            [
                res.OrderLine(
                    goods_id=tea.goods_id, shop_id="shop-a", unit_price_minor=1000, quantity=1
                )
            ],
        )
    assert below_min.value.reason == "MIN_SPEND_NOT_MET"

    redeemed = (
        await orders.redeem_coupon("order-1", coupon.code, "flow-viewer-1", CURRENCY, [tea, saucer])
    ).redemption
    # Only the tea counts: 2 x 3000 = 6000 eligible; the saucer is not a target goods.
    assert redeemed.eligible_subtotal_minor == 6000
    assert redeemed.discount_minor == 2000
    assert redeemed.coupon.state == res.COUPON_STATE_REDEEMED
    again = (
        await orders.redeem_coupon("order-1", coupon.code, "flow-viewer-1", CURRENCY, [tea, saucer])
    ).redemption
    assert again.redeem_time == redeemed.redeem_time and again.discount_minor == 2000

    with pytest.raises(FailedPreconditionError) as taken:
        await orders.redeem_coupon("order-2", coupon.code, "flow-viewer-1", CURRENCY, [tea])
    assert taken.value.reason == "COUPON_ALREADY_REDEEMED"

    released = await orders.release_coupon("order-1")
    assert released.redemption.released
    assert released.coupon.state == res.COUPON_STATE_AVAILABLE
    assert (await orders.release_coupon("order-1")).redemption.release_time == (
        released.redemption.release_time
    )
    # Back with the viewer, the same coupon can be used on the next order.
    reused = await orders.redeem_coupon("order-2", coupon.code, "flow-viewer-1", CURRENCY, [tea])
    assert reused.redemption.coupon.coupon_id == coupon.coupon_id


async def test_percent_coupon_on_a_linked_shop_is_capped(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = svc.CreatePool(
        title="15% off the cup shop",
        terms=res.CouponTerms(
            kind=res.COUPON_KIND_PERCENT_OFF, percent_off=15, max_discount_minor=1000
        ),
        target=res.TargetGoods(shop_ids=["shop-b"]),
        total_quantity=5,
        per_viewer_limit=1,
        validity=res.CouponValidity(valid_for={"seconds": 600}),
    )
    created = (await room.streamer.configure_resources(room.room_id, create_pool=pool)).pool
    viewer = clients("viewer", "percent-viewer")
    code = (await viewer.allocate(created.pool_id)).coupon.code
    orders = clients("order_service", "orders")
    small = [
        res.OrderLine(
            goods_id=f"{room.room_id}-saucer", shop_id="shop-b", unit_price_minor=1999, quantity=1
        )
    ]
    got = await orders.redeem_coupon("pct-1", code, "percent-viewer", CURRENCY, small)
    assert got.redemption.discount_minor == 1999 * 15 // 100
    await orders.release_coupon("pct-1")
    big = [
        res.OrderLine(
            goods_id=f"{room.room_id}-cup", shop_id="shop-b", unit_price_minor=50_000, quantity=1
        )
    ]
    capped = await orders.redeem_coupon("pct-2", code, "percent-viewer", CURRENCY, big)
    assert capped.redemption.discount_minor == 1000


async def test_streamer_adds_stock_changes_window_and_stops_with_events(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    viewer = clients("viewer", "ops-viewer")
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=1)
        )
    ).pool
    async with viewer.subscribe(room.room_id) as sub:
        snapshot = (await next_item(sub)).snapshot
        assert [p.pool_id for p in snapshot.pools] == [pool.pool_id]
        assert (await viewer.allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
        assert [(await next_event(sub)).WhichOneof("kind") for _ in range(2)] == [
            "stock_changed",
            "pool_sold_out",
        ]

        added = (
            await room.streamer.configure_resources(
                room.room_id,
                add_stock=svc.AddStock(pool_id=pool.pool_id, expected_version=1, quantity=4),
            )
        ).pool
        assert (added.version, added.total_quantity, added.remaining_quantity) == (2, 5, 4)
        assert added.state == res.POOL_STATE_OPEN
        changed = await next_event(sub)
        assert changed.pool_changed.pool.remaining_quantity == 4

        end = changed.event_time.ToDatetime().replace(tzinfo=None)
        window = svc.UpdateClaimWindow(
            pool_id=pool.pool_id, expected_version=2, claim_start_time=added.claim_start_time
        )
        window.claim_end_time.FromDatetime(end.replace(microsecond=0) + timedelta(minutes=30))
        moved = (
            await room.streamer.configure_resources(room.room_id, update_claim_window=window)
        ).pool
        assert moved.version == 3 and moved.HasField("claim_end_time")
        assert (await next_event(sub)).pool_changed.pool.claim_end_time == moved.claim_end_time

        stopped = (
            await room.streamer.configure_resources(
                room.room_id, stop_pool=svc.StopPool(pool_id=pool.pool_id, expected_version=3)
            )
        ).pool
        assert stopped.state == res.POOL_STATE_CLOSED
        assert (stopped.granted_quantity, stopped.remaining_quantity) == (1, 0)
        assert (stopped.withdrawn_quantity, stopped.total_quantity) == (4, 1)
        closed = await next_event(sub)
        assert closed.pool_closed.reason == ev.CLOSE_REASON_STOPPED
        assert closed.pool_closed.withdrawn_quantity == 4
    late = await clients("viewer", "ops-late").allocate(pool.pool_id)
    assert late.outcome == svc.ALLOCATION_OUTCOME_CLOSED


async def test_retried_configure_returns_the_first_answer(make_room: RoomMaker) -> None:
    room = await make_room()
    request_id = new_request_id()
    spec = fixed_pool(room.room_id)
    first = await room.streamer.configure_resources(
        room.room_id, create_pool=spec, request_id=request_id
    )
    second = await room.streamer.configure_resources(
        room.room_id, create_pool=spec, request_id=request_id
    )
    assert first.pool.pool_id == second.pool.pool_id
    assert first.pool.create_time == second.pool.create_time
