"""Checkout rules: lock a coupon for an order, then confirm, release or refund it.

A coupon on an order moves LOCKED -> CONFIRMED -> (REFUNDED), or LOCKED/CONFIRMED ->
RELEASED. A lock past its expiry counts as RELEASED (LOCK_EXPIRED) from that instant
(`Redemption.as_of`). Released and refunded coupons go back to their viewer unchanged: same
coupon, same validity.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from server.domain.errors import FailedPrecondition, PreconditionViolation
from server.domain.models import (
    Coupon,
    OrderLine,
    Redemption,
    RedemptionState,
    RefundKind,
    ReleaseReason,
)
from server.domain.pricing import check_redeemable


def _fail(kind: str, subject: str, description: str) -> FailedPrecondition:
    return FailedPrecondition([PreconditionViolation(kind, subject, description)])


def _order_total(lines: list[OrderLine]) -> int:
    return sum(line.unit_price_minor * line.quantity for line in lines)


def lock(
    coupon: Coupon,
    order_id: str,
    viewer_id: str,
    currency_code: str,
    lines: list[OrderLine],
    others: list[Redemption],
    now: datetime,
    lock_for: timedelta | None,
) -> Redemption:
    """Put `coupon` on the order, locked until now + lock_for (None: confirmed at once).

    `others` are the order's redemptions of other coupons, as of now. Raises
    FailedPrecondition when the coupon cannot be used: the checks of `check_redeemable`,
    then stacking: a coupon of a room combines with the order's other live coupons of that
    room only if both pools are stackable. The discount is capped so that the order's
    discounts never exceed the order's total.
    """
    subtotal, discount = check_redeemable(coupon, viewer_id, currency_code, lines, now)
    subject = f"coupons/{coupon.code}"
    live = [r for r in others if r.live]
    same_room = [r for r in live if r.coupon.room_id == coupon.room_id]
    if same_room and not (coupon.stackable and all(r.coupon.stackable for r in same_room)):
        raise _fail(
            "NOT_COMBINABLE",
            subject,
            "the order already holds a coupon of this room and one of them does not combine "
            "with other coupons",
        )
    left = _order_total(lines) - sum(r.discount_minor for r in live)
    discount = max(0, min(discount, left))
    locked = lock_for is not None
    expires = now + lock_for if lock_for is not None else None
    return Redemption(
        order_id=order_id,
        coupon=replace(coupon, redeemed_order_id=order_id, lock_expires_at=expires),
        eligible_subtotal_minor=subtotal,
        discount_minor=discount,
        redeemed_at=now,
        state=RedemptionState.LOCKED if locked else RedemptionState.CONFIRMED,
        lock_expires_at=expires,
        confirmed_at=None if locked else now,
    )


def confirm(order: list[Redemption], now: datetime) -> list[Redemption]:
    """Confirm every coupon of the order (as of now); all or nothing.

    Already confirmed ones stay as they are (a repeated call). Raises FailedPrecondition if
    any coupon of the order is no longer locked or confirmed.
    """
    for r in order:
        subject = f"orders/{r.order_id}/coupons/{r.coupon.code}"
        if r.state is RedemptionState.RELEASED and r.release_reason is ReleaseReason.LOCK_EXPIRED:
            raise _fail("LOCK_EXPIRED", subject, "the coupon's checkout lock expired")
        if r.state is RedemptionState.RELEASED:
            raise _fail("ORDER_RELEASED", subject, "the coupon was released from the order")
        if r.state is RedemptionState.REFUNDED:
            raise _fail("ORDER_REFUNDED", subject, "the order was refunded")
    return [
        r
        if r.state is RedemptionState.CONFIRMED
        else replace(
            r,
            state=RedemptionState.CONFIRMED,
            confirmed_at=now,
            lock_expires_at=None,
            coupon=replace(r.coupon, lock_expires_at=None),
        )
        for r in order
    ]


def _give_back(r: Redemption, now: datetime, **changes: object) -> Redemption:
    coupon = replace(
        r.coupon,
        redeemed_order_id=None,
        lock_expires_at=None,
        release_count=r.coupon.release_count + 1,
    )
    return replace(r, coupon=coupon, released_at=now, **changes)  # type: ignore[arg-type]


def release(order: list[Redemption], reason: ReleaseReason, now: datetime) -> list[Redemption]:
    """Give back every coupon the order still holds; released or refunded ones stay as
    they are."""
    return [
        _give_back(r, now, state=RedemptionState.RELEASED, release_reason=reason) if r.live else r
        for r in order
    ]


def refund(order: list[Redemption], kind: RefundKind, now: datetime) -> list[Redemption]:
    """Record a refund: a full one gives confirmed coupons back, a partial one keeps them
    used. Raises FailedPrecondition if the order's payment was never confirmed."""
    if not any(r.state in (RedemptionState.CONFIRMED, RedemptionState.REFUNDED) for r in order):
        first = order[0]
        raise _fail(
            "NOT_CONFIRMED",
            f"orders/{first.order_id}",
            "the order's payment was never confirmed; release its coupons instead",
        )
    out: list[Redemption] = []
    for r in order:
        if r.state is not RedemptionState.CONFIRMED:
            out.append(r)
        elif kind is RefundKind.FULL:
            out.append(_give_back(r, now, state=RedemptionState.REFUNDED, refunded_at=now))
        elif not r.partially_refunded:
            out.append(replace(r, partially_refunded=True, refunded_at=now))
        else:
            out.append(r)
    return out
