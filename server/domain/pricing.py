"""Redemption rules: is a coupon usable on an order, and what discount it gives."""

from __future__ import annotations

from datetime import datetime

from server.domain.errors import FailedPrecondition, PreconditionViolation
from server.domain.models import Coupon, CouponKind, CouponState, CouponTerms, OrderLine


def discount_for(terms: CouponTerms, eligible_subtotal: int) -> int:
    """The discount in minor units on an eligible subtotal; never more than the subtotal."""
    if terms.kind is CouponKind.FIXED_AMOUNT:
        discount = terms.amount_off_minor
    else:
        # Integer arithmetic, rounded down: money never goes through floats.
        discount = eligible_subtotal * terms.percent_off // 100
        if terms.max_discount_minor:
            discount = min(discount, terms.max_discount_minor)
    return min(discount, eligible_subtotal)


def eligible_subtotal(coupon: Coupon, lines: list[OrderLine]) -> int:
    """Sum of price x quantity over the lines the coupon applies to."""
    return sum(
        line.unit_price_minor * line.quantity
        for line in lines
        if coupon.target.covers(line.goods_id, line.shop_id)
    )


def check_redeemable(
    coupon: Coupon, viewer_id: str, currency_code: str, lines: list[OrderLine], now: datetime
) -> tuple[int, int]:
    """Raise FailedPrecondition unless the coupon can be used on this order.

    Returns (eligible subtotal, discount).
    """
    subject = f"coupons/{coupon.code}"

    def fail(kind: str, description: str) -> FailedPrecondition:
        return FailedPrecondition([PreconditionViolation(kind, subject, description)])

    if coupon.viewer_id != viewer_id:
        raise fail("COUPON_NOT_OWNED", "the coupon belongs to another viewer")
    state = coupon.state_at(now)
    if state is CouponState.REDEEMED:
        raise fail("COUPON_ALREADY_REDEEMED", "the coupon is already redeemed on another order")
    if state is CouponState.LOCKED:
        raise fail("COUPON_LOCKED", "the coupon is locked for another order's checkout")
    if state is CouponState.EXPIRED:
        raise fail("COUPON_EXPIRED", "the coupon's validity has ended")
    if now < coupon.valid_from:
        raise fail("COUPON_NOT_YET_VALID", "the coupon's validity has not started")
    if currency_code != coupon.currency_code:
        raise fail("CURRENCY_MISMATCH", f"the coupon is in {coupon.currency_code}")
    subtotal = eligible_subtotal(coupon, lines)
    if subtotal == 0 and not any(coupon.target.covers(x.goods_id, x.shop_id) for x in lines):
        raise fail("NOT_APPLICABLE", "no line of the order is a target goods of the coupon")
    if subtotal < coupon.terms.min_spend_minor:
        raise fail(
            "MIN_SPEND_NOT_MET",
            f"the eligible subtotal {subtotal} is below the minimum "
            f"spend {coupon.terms.min_spend_minor}",
        )
    return subtotal, discount_for(coupon.terms, subtotal)
