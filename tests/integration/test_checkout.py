"""Checkout over real gRPC: lock, confirm, release, expiry, refunds and stacking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client_sdk import (
    AlreadyExistsError,
    AsyncLiveResourceClient,
    FailedPreconditionError,
    NotFoundError,
)
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomFixture, RoomMaker, ServerHandle, launch
from tests.support import CURRENCY, fixed_pool, room_message, unique

LOCK_SECONDS = 120  # the test server's --checkout-lock-seconds


def tea(room_id: str, price: int = 3000, quantity: int = 2) -> res.OrderLine:
    return res.OrderLine(
        goods_id=f"{room_id}-tea", shop_id="shop-a", unit_price_minor=price, quantity=quantity
    )


def violation(error: FailedPreconditionError) -> str:
    return error.precondition_violations[0].type


@dataclass
class Shop:
    """A room with a pool, a viewer holding coupons of it, and the order service."""

    room: RoomFixture
    pool: res.Pool
    viewer_id: str
    viewer: AsyncLiveResourceClient
    orders: AsyncLiveResourceClient

    async def grab(self, pool: res.Pool | None = None) -> res.Coupon:
        answer = await self.viewer.allocate((pool or self.pool).pool_id)
        assert answer.outcome == svc.ALLOCATION_OUTCOME_GRANTED, answer
        return answer.coupon

    async def lock(self, order_id: str, coupon: res.Coupon, price: int = 3000) -> res.Redemption:
        answer = await self.orders.lock_coupon(
            order_id, coupon.code, self.viewer_id, CURRENCY, [tea(self.room.room_id, price)]
        )
        return answer.redemption

    async def coupon(self, code: str) -> res.Coupon:
        listed = await self.viewer.list_coupons(room_id=self.room.room_id, page_size=200)
        [found] = [c for c in listed.coupons if c.code == code]
        return found

    async def pool_of(self, *, stackable: bool, amount_off: int = 2000) -> res.Pool:
        create = fixed_pool(self.room.room_id, total=10, limit=3, amount_off=amount_off)
        create.stackable = stackable
        created = await self.room.streamer.configure_resources(
            self.room.room_id, create_pool=create
        )
        return created.pool


async def make_shop(make_room: RoomMaker, clients: ClientFactory) -> Shop:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=20, limit=5)
        )
    ).pool
    viewer_id = unique("buyer")
    return Shop(
        room, pool, viewer_id, clients("viewer", viewer_id), clients("order_service", "orders")
    )


@pytest.fixture
async def shop(make_room: RoomMaker, clients: ClientFactory) -> Shop:
    return await make_shop(make_room, clients)


async def test_lock_then_confirm_uses_the_coupon_once(shop: Shop) -> None:
    coupon = await shop.grab()
    order = unique("order")
    locked = await shop.lock(order, coupon)
    assert locked.state == res.REDEMPTION_STATE_LOCKED
    assert (locked.eligible_subtotal_minor, locked.discount_minor) == (6000, 2000)
    assert locked.lock_expire_time.seconds > locked.redeem_time.seconds
    assert locked.coupon.state == res.COUPON_STATE_LOCKED and locked.coupon.order_id == order
    assert (await shop.coupon(coupon.code)).state == res.COUPON_STATE_LOCKED
    # Repeating the lock answers the same; other lines for the same pair are refused.
    again = await shop.lock(order, coupon)
    assert again == locked
    with pytest.raises(AlreadyExistsError):
        await shop.lock(order, coupon, price=9000)
    # Another order cannot take a locked coupon.
    with pytest.raises(FailedPreconditionError) as taken:
        await shop.lock(unique("order"), coupon)
    assert violation(taken.value) == "COUPON_LOCKED"

    confirmed = (await shop.orders.confirm_coupons(order)).redemptions
    assert [r.state for r in confirmed] == [res.REDEMPTION_STATE_CONFIRMED]
    assert confirmed[0].confirm_time.seconds > 0
    assert not confirmed[0].HasField("lock_expire_time")
    assert confirmed[0].coupon.state == res.COUPON_STATE_REDEEMED
    assert (await shop.orders.confirm_coupons(order)).redemptions == confirmed
    # A repeated lock of a confirmed pair answers its state now.
    assert (await shop.lock(order, coupon)).state == res.REDEMPTION_STATE_CONFIRMED
    with pytest.raises(FailedPreconditionError) as used:
        await shop.lock(unique("order"), coupon)
    assert violation(used.value) == "COUPON_ALREADY_REDEEMED"


async def test_lock_then_release_gives_the_same_coupon_back(shop: Shop) -> None:
    coupon = await shop.grab()
    order = unique("order")
    await shop.lock(order, coupon)
    released = await shop.orders.release_coupon(order, payment_failed=True)
    [r] = released.redemptions
    assert r.state == res.REDEMPTION_STATE_RELEASED and r.released
    assert r.release_reason == res.RELEASE_REASON_PAYMENT_FAILED
    assert released.coupon.state == res.COUPON_STATE_AVAILABLE
    back = await shop.coupon(coupon.code)
    assert (back.coupon_id, back.valid_until, back.order_id) == (
        coupon.coupon_id,
        coupon.valid_until,
        "",
    )
    # Releasing again changes nothing; the payment cannot be confirmed any more.
    assert (await shop.orders.release_coupon(order)).redemptions == released.redemptions
    with pytest.raises(FailedPreconditionError) as late:
        await shop.orders.confirm_coupons(order)
    assert violation(late.value) == "ORDER_RELEASED"
    # The coupon is usable on a new order.
    assert (await shop.lock(unique("order"), coupon)).state == res.REDEMPTION_STATE_LOCKED


async def test_unknown_orders_and_codes_are_not_found(shop: Shop) -> None:
    for call in (
        shop.orders.confirm_coupons(unique("order")),
        shop.orders.release_coupon(unique("order")),
        shop.orders.refund_coupons(unique("order"), full=True),
        shop.orders.lock_coupon(
            unique("order"), "NO-SUCH-CODE", shop.viewer_id, CURRENCY, [tea(shop.room.room_id)]
        ),
    ):
        with pytest.raises(NotFoundError):
            await call


async def test_refunds_full_gives_back_partial_keeps_used(shop: Shop) -> None:
    one, two = await shop.grab(), await shop.grab()
    full, partial = unique("order"), unique("order")
    for order, coupon in ((full, one), (partial, two)):
        await shop.lock(order, coupon)
    # A payment never confirmed is released, not refunded.
    with pytest.raises(FailedPreconditionError) as early:
        await shop.orders.refund_coupons(full, full=True)
    assert violation(early.value) == "NOT_CONFIRMED"
    for order in (full, partial):
        await shop.orders.confirm_coupons(order)

    [refunded] = (await shop.orders.refund_coupons(full, full=True)).redemptions
    assert refunded.state == res.REDEMPTION_STATE_REFUNDED and refunded.released
    back = await shop.coupon(one.code)
    assert back.state == res.COUPON_STATE_AVAILABLE and back.valid_until == one.valid_until
    assert (await shop.orders.refund_coupons(full, full=True)).redemptions == [refunded]

    [kept] = (await shop.orders.refund_coupons(partial, full=False)).redemptions
    assert kept.state == res.REDEMPTION_STATE_CONFIRMED and kept.partially_refunded
    assert (await shop.coupon(two.code)).state == res.COUPON_STATE_REDEEMED
    assert (await shop.orders.refund_coupons(partial, full=False)).redemptions == [kept]
    # The rest refunded later: now the coupon goes back.
    [rest] = (await shop.orders.refund_coupons(partial, full=True)).redemptions
    assert rest.state == res.REDEMPTION_STATE_REFUNDED
    assert (await shop.coupon(two.code)).state == res.COUPON_STATE_AVAILABLE


async def test_stacking_rule_of_each_pool(shop: Shop) -> None:
    a = await shop.grab(await shop.pool_of(stackable=True))
    b = await shop.grab(await shop.pool_of(stackable=True, amount_off=5000))
    solo = await shop.grab(await shop.pool_of(stackable=False))
    order = unique("order")
    await shop.lock(order, a)
    # Two stackable coupons combine; their discounts never exceed the order's total.
    second = await shop.lock(order, b)
    assert second.state == res.REDEMPTION_STATE_LOCKED
    assert second.discount_minor == 6000 - 2000
    with pytest.raises(FailedPreconditionError) as refused:
        await shop.lock(order, solo)
    assert violation(refused.value) == "NOT_COMBINABLE"
    # A non-stackable coupon first: nothing else of the room joins it.
    other = unique("order")
    await shop.lock(other, solo)
    c = await shop.grab(await shop.pool_of(stackable=True))
    with pytest.raises(FailedPreconditionError) as refused_after:
        await shop.lock(other, c)
    assert violation(refused_after.value) == "NOT_COMBINABLE"
    # Confirm and release act on every coupon of the order.
    confirmed = (await shop.orders.confirm_coupons(order)).redemptions
    assert [r.coupon.code for r in confirmed] == [a.code, b.code]
    assert {r.state for r in confirmed} == {res.REDEMPTION_STATE_CONFIRMED}
    released = (await shop.orders.release_coupon(order)).redemptions
    assert {r.state for r in released} == {res.REDEMPTION_STATE_RELEASED}


async def test_one_step_redeem_keeps_its_contract(shop: Shop) -> None:
    coupon, other = await shop.grab(), await shop.grab()
    order = unique("order")
    lines = [tea(shop.room.room_id)]
    done = await shop.orders.redeem_coupon(order, coupon.code, shop.viewer_id, CURRENCY, lines)
    r = done.redemption
    assert r.state == res.REDEMPTION_STATE_CONFIRMED and r.coupon.state == res.COUPON_STATE_REDEEMED
    again = await shop.orders.redeem_coupon(order, coupon.code, shop.viewer_id, CURRENCY, lines)
    assert again.redemption == r
    with pytest.raises(AlreadyExistsError):
        await shop.orders.redeem_coupon(order, other.code, shop.viewer_id, CURRENCY, lines)


# --- a server of its own: its clock moves ------------------------------------------------


@pytest.fixture
async def own_server(database_url: str, tmp_path: Path) -> AsyncIterator[ServerHandle]:
    handle = await launch(
        tmp_path, database_url=database_url, checkout_lock_seconds=float(LOCK_SECONDS)
    )
    yield handle
    await handle.running.stop(1.0)


@pytest.fixture
async def own_shop(
    own_server: ServerHandle, client_factory: ClientFactory
) -> tuple[Shop, ServerHandle]:
    target = own_server.target
    room_id, streamer_id = unique("room"), unique("streamer")
    platform = client_factory("platform", "platform", target=target)
    await platform.register_room(room_message(room_id, streamer_id))
    streamer = client_factory("streamer", streamer_id, target=target)
    pool = (
        await streamer.configure_resources(room_id, create_pool=fixed_pool(room_id, total=5))
    ).pool
    viewer_id = unique("buyer")
    return (
        Shop(
            RoomFixture(room_id, streamer_id, streamer),
            pool,
            viewer_id,
            client_factory("viewer", viewer_id, target=target),
            client_factory("order_service", "orders", target=target),
        ),
        own_server,
    )


async def test_a_lock_expires_on_its_own(own_shop: tuple[Shop, ServerHandle]) -> None:
    shop, server = own_shop
    coupon = await shop.grab()
    order = unique("order")
    locked = await shop.lock(order, coupon)
    assert locked.lock_expire_time.seconds - locked.redeem_time.seconds in (
        LOCK_SECONDS - 1,
        LOCK_SECONDS,
    )
    server.clock.advance(LOCK_SECONDS + 1)
    assert (await shop.coupon(coupon.code)).state == res.COUPON_STATE_AVAILABLE
    with pytest.raises(FailedPreconditionError) as late:
        await shop.orders.confirm_coupons(order)
    assert violation(late.value) == "LOCK_EXPIRED"
    stats = await shop.room.streamer.get_pool_stats(shop.room.room_id, shop.pool.pool_id)
    assert (stats.locked_quantity, stats.released_quantity) == (0, 1)
    # Another order may lock it now; the first order shows its lock expired.
    assert (await shop.lock(unique("order"), coupon)).state == res.REDEMPTION_STATE_LOCKED
    [first] = (await shop.orders.release_coupon(order)).redemptions
    assert first.state == res.REDEMPTION_STATE_RELEASED
    assert first.release_reason == res.RELEASE_REASON_LOCK_EXPIRED
    assert first.release_time == locked.lock_expire_time


async def test_an_expired_coupon_stays_expired_after_a_refund(
    own_shop: tuple[Shop, ServerHandle],
) -> None:
    shop, server = own_shop
    coupon = await shop.grab()
    order = unique("order")
    await shop.lock(order, coupon)
    await shop.orders.confirm_coupons(order)
    server.clock.advance(1800 + 1)  # the pool's coupons are valid for 1800 s
    [refunded] = (await shop.orders.refund_coupons(order, full=True)).redemptions
    assert refunded.state == res.REDEMPTION_STATE_REFUNDED
    assert refunded.coupon.state == res.COUPON_STATE_EXPIRED
    assert refunded.coupon.valid_until == coupon.valid_until
    stats = await shop.room.streamer.get_pool_stats(shop.room.room_id, shop.pool.pool_id)
    assert (stats.expired_quantity, stats.redeemed_quantity) == (1, 0)
