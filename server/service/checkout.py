"""The order service's side: lock a coupon at checkout, confirm, release, refund.

Every call is idempotent per order: a unit of work first waits for any other one on the same
order (`Transaction.lock_order`), reads the order's redemptions as of now (expired locks are
released), applies one rule of `server.domain.checkout` and writes what changed.
"""

from __future__ import annotations

from datetime import datetime

from server.domain import checkout as rules
from server.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from server.domain.models import (
    Coupon,
    OrderLine,
    Principal,
    Redemption,
    RefundKind,
    ReleaseReason,
    Role,
)
from server.domain.validation import check_currency, check_id, check_range
from server.service.access import require_role
from server.service.context import ServiceContext
from server.store.interface import Transaction

MAX_ORDER_LINES = 500


def _check_order_id(order_id: str, out: list[FieldViolation]) -> None:
    check_id(order_id, "order_id", out)


def _check_order(
    order_id: str, code: str, viewer_id: str, currency_code: str, lines: list[OrderLine]
) -> None:
    out: list[FieldViolation] = []
    _check_order_id(order_id, out)
    if not code:
        out.append(FieldViolation("coupon_code", "is required"))
    elif len(code) > 64:
        out.append(FieldViolation("coupon_code", "must be at most 64 characters"))
    check_id(viewer_id, "viewer_id", out)
    check_currency(currency_code, "currency_code", out)
    if not 1 <= len(lines) <= MAX_ORDER_LINES:
        out.append(FieldViolation("lines", f"must hold 1 to {MAX_ORDER_LINES} lines"))
    for i, line in enumerate(lines[:MAX_ORDER_LINES]):
        check_id(line.goods_id, f"lines[{i}].goods_id", out)
        check_id(line.shop_id, f"lines[{i}].shop_id", out)
        check_range(line.unit_price_minor, (0, 10**13), f"lines[{i}].unit_price_minor", out)
        check_range(line.quantity, (1, 10_000), f"lines[{i}].quantity", out)
    if out:
        raise InvalidArgument(out)


async def _persist(tx: Transaction, stored: list[Redemption], now_: list[Redemption]) -> None:
    """Write the redemptions (and their coupons' holds) that differ from what is stored."""
    changed = [new for old, new in zip(stored, now_, strict=True) if new != old]
    await tx.update_redemptions(changed)
    coupons: list[Coupon] = [
        new.coupon for old, new in zip(stored, now_, strict=True) if new.coupon != old.coupon
    ]
    await tx.update_coupon_holds(coupons)


async def _order(
    tx: Transaction, order_id: str, now: datetime
) -> tuple[list[Redemption], list[Redemption], list[str]]:
    """The order's redemptions as stored, as of now, and their fingerprints."""
    await tx.lock_order(order_id)
    found = await tx.get_redemptions(order_id)
    stored = [r for r, _ in found]
    return stored, [r.as_of(now) for r in stored], [fp for _, fp in found]


async def lock(
    ctx: ServiceContext,
    principal: Principal,
    order_id: str,
    code: str,
    viewer_id: str,
    currency_code: str,
    lines: list[OrderLine],
    fingerprint: str,
    *,
    one_step: bool = False,
) -> Redemption:
    """Lock a coupon for an order (`one_step`: redeem it at once, RedeemCoupon).

    Idempotent per (order, coupon); RedeemCoupon per order.
    """
    require_role(principal, Role.ORDER_SERVICE)
    _check_order(order_id, code, viewer_id, currency_code, lines)
    async with ctx.store.transaction(write=True) as tx:
        now = ctx.clock()
        stored, current, fingerprints = await _order(tx, order_id, now)
        for r, fp in zip(current, fingerprints, strict=True):
            if (one_step or r.coupon.code == code) and fp == fingerprint:
                return r
        if (one_step and stored) or any(r.coupon.code == code for r in current):
            raise AlreadyExists(
                "order",
                order_id,
                f"order {order_id!r} already has this coupon, or a coupon, with other parameters",
            )
        # The order holding the coupon is waited for before the coupon's row is locked, as
        # that order's own units of work do: so they cannot deadlock each other.
        peek = await tx.get_coupon_by_code(code, for_update=False)
        if peek is None:
            raise NotFound("coupon", code)
        if peek.redeemed_order_id is not None:
            await tx.lock_order(peek.redeemed_order_id)
        coupon = await tx.get_coupon_by_code(code)
        assert coupon is not None, "coupons are never deleted"
        if coupon.redeemed_order_id is not None and coupon.order_at(now) is None:
            coupon = await _expire_lock(tx, coupon, now)
        redemption = rules.lock(
            coupon,
            order_id,
            viewer_id,
            currency_code,
            lines,
            current,
            now,
            None if one_step else ctx.checkout_lock,
        )
        await _persist(tx, stored, current)
        await tx.update_coupon_holds([redemption.coupon])
        await tx.insert_redemption(redemption, fingerprint)
        return redemption


async def _expire_lock(tx: Transaction, coupon: Coupon, now: datetime) -> Coupon:
    """Write down that the coupon's lock on another order expired; the coupon freed."""
    assert coupon.redeemed_order_id is not None
    await tx.lock_order(coupon.redeemed_order_id)  # held already, unless the holder changed
    stored = [r for r, _ in await tx.get_redemptions(coupon.redeemed_order_id)]
    mine = [r for r in stored if r.coupon.coupon_id == coupon.coupon_id]
    expired = [r.as_of(now) for r in mine]
    await _persist(tx, mine, expired)
    freed = next((r.coupon for r in expired), coupon)
    return freed


async def confirm(ctx: ServiceContext, principal: Principal, order_id: str) -> list[Redemption]:
    """Confirm the coupons locked for an order whose payment succeeded."""
    require_role(principal, Role.ORDER_SERVICE)
    _require_order_id(order_id)
    async with ctx.store.transaction(write=True) as tx:
        now = ctx.clock()
        stored, current, _ = await _order(tx, order_id, now)
        if not stored:
            raise NotFound("order", order_id)
        confirmed = rules.confirm(current, now)
        await _persist(tx, stored, confirmed)
        return confirmed


async def release(
    ctx: ServiceContext, principal: Principal, order_id: str, reason: ReleaseReason | None
) -> list[Redemption]:
    """Give back the coupons of an order whose payment failed or that was cancelled.

    `reason` None: a reason the caller may not give (INVALID_ARGUMENT).
    """
    require_role(principal, Role.ORDER_SERVICE)
    _require_order_id(order_id, ("reason", reason))
    async with ctx.store.transaction(write=True) as tx:
        now = ctx.clock()
        stored, current, _ = await _order(tx, order_id, now)
        if not stored:
            raise NotFound("redemption", order_id)
        assert reason is not None  # checked above
        released = rules.release(current, reason, now)
        await _persist(tx, stored, released)
        return released


async def refund(
    ctx: ServiceContext, principal: Principal, order_id: str, kind: RefundKind | None
) -> list[Redemption]:
    """Record a full or partial refund of a confirmed order (`kind` None: not given)."""
    require_role(principal, Role.ORDER_SERVICE)
    _require_order_id(order_id, ("kind", kind))
    async with ctx.store.transaction(write=True) as tx:
        now = ctx.clock()
        stored, current, _ = await _order(tx, order_id, now)
        if not stored:
            raise NotFound("redemption", order_id)
        assert kind is not None  # checked above
        refunded = rules.refund(current, kind, now)
        await _persist(tx, stored, refunded)
        return refunded


def _require_order_id(order_id: str, *required: tuple[str, object | None]) -> None:
    out: list[FieldViolation] = []
    _check_order_id(order_id, out)
    for name, value in required:
        if value is None:
            out.append(FieldViolation(name, "is required and must be one the caller may give"))
    if out:
        raise InvalidArgument(out)
