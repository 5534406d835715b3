"""Redemption rules: discounts, eligible subtotals and why a coupon cannot be used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import FailedPrecondition
from server.domain.models import Coupon, CouponKind, CouponTerms, OrderLine, Target
from server.domain.pricing import check_redeemable, discount_for, eligible_subtotal

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
VIEWER = "viewer-1"


def fixed(amount: int, min_spend: int = 0) -> CouponTerms:
    return CouponTerms(CouponKind.FIXED_AMOUNT, amount_off_minor=amount, min_spend_minor=min_spend)


def percent(pct: int, cap: int = 0, min_spend: int = 0) -> CouponTerms:
    return CouponTerms(
        CouponKind.PERCENT_OFF, percent_off=pct, max_discount_minor=cap, min_spend_minor=min_spend
    )


def coupon(
    terms: CouponTerms | None = None,
    target: Target | None = None,
    *,
    viewer_id: str = VIEWER,
    currency: str = "CNY",
    valid_from: datetime = NOW - timedelta(hours=1),
    valid_until: datetime = NOW + timedelta(hours=1),
    redeemed_order_id: str | None = None,
) -> Coupon:
    return Coupon(
        coupon_id="c-1",
        code="CODE1",
        pool_id="p-1",
        room_id="r-1",
        viewer_id=viewer_id,
        terms=terms or fixed(500),
        target=target or Target(goods_ids=("tea",), shop_ids=("shop-b",)),
        currency_code=currency,
        valid_from=valid_from,
        valid_until=valid_until,
        redeemed_order_id=redeemed_order_id,
    )


def violation_type(exc: pytest.ExceptionInfo[FailedPrecondition]) -> list[str]:
    return [v.type for v in exc.value.violations]


# --- discount_for -----------------------------------------------------------------------


def test_fixed_discount_is_its_amount_when_the_subtotal_is_larger() -> None:
    assert discount_for(fixed(500), 2_000) == 500


def test_fixed_discount_never_exceeds_the_eligible_subtotal() -> None:
    assert discount_for(fixed(500), 300) == 300
    assert discount_for(fixed(500), 0) == 0


def test_percent_discount_rounds_down_to_a_whole_minor_unit() -> None:
    # 15% of 999 is 149.85: the viewer gets 149, never 150.
    assert discount_for(percent(15), 999) == 149
    # 33% of 1 is 0.33: nothing.
    assert discount_for(percent(33), 1) == 0


def test_percent_discount_uses_integer_arithmetic_on_huge_amounts() -> None:
    subtotal = 10**18 + 7  # beyond float precision
    assert discount_for(percent(10), subtotal) == subtotal // 10


def test_percent_discount_is_capped_at_max_discount() -> None:
    assert discount_for(percent(50, cap=300), 10_000) == 300


def test_percent_discount_below_the_cap_is_not_raised_to_it() -> None:
    assert discount_for(percent(10, cap=300), 1_000) == 100


def test_percent_discount_with_zero_cap_is_uncapped() -> None:
    assert discount_for(percent(50, cap=0), 10_000) == 5_000


# --- eligible_subtotal ------------------------------------------------------------------


def test_eligible_subtotal_counts_only_target_goods_and_target_shop_lines() -> None:
    c = coupon(target=Target(goods_ids=("tea",), shop_ids=("shop-b",)))
    lines = [
        OrderLine("tea", "shop-a", 300, 2),  # target goods: 600
        OrderLine("cup", "shop-b", 150, 3),  # goods of a target shop: 450
        OrderLine("pot", "shop-a", 1_000, 1),  # neither
        OrderLine("bowl", "shop-c", 70, 5),  # neither
    ]
    assert eligible_subtotal(c, lines) == 600 + 450


def test_eligible_subtotal_counts_a_line_once_when_covered_by_goods_and_shop() -> None:
    c = coupon(target=Target(goods_ids=("tea",), shop_ids=("shop-a",)))
    assert eligible_subtotal(c, [OrderLine("tea", "shop-a", 100, 3)]) == 300


def test_eligible_subtotal_is_zero_when_no_line_is_covered() -> None:
    c = coupon(target=Target(goods_ids=("tea",)))
    assert eligible_subtotal(c, [OrderLine("cup", "shop-a", 100, 1)]) == 0


# --- check_redeemable -------------------------------------------------------------------


def test_check_redeemable_returns_subtotal_and_discount_for_a_usable_coupon() -> None:
    c = coupon(percent(20, cap=0), Target(goods_ids=("tea",)))
    lines = [OrderLine("tea", "shop-a", 1_000, 2), OrderLine("cup", "shop-a", 500, 1)]
    assert check_redeemable(c, VIEWER, "CNY", lines, NOW) == (2_000, 400)


def test_check_redeemable_refuses_another_viewers_coupon() -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(coupon(), "viewer-2", "CNY", [OrderLine("tea", "s", 1_000, 1)], NOW)
    assert violation_type(exc) == ["COUPON_NOT_OWNED"]
    assert exc.value.violations[0].subject == "coupons/CODE1"


def test_check_redeemable_refuses_a_coupon_already_on_an_order() -> None:
    c = coupon(redeemed_order_id="order-9")
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(c, VIEWER, "CNY", [OrderLine("tea", "s", 1_000, 1)], NOW)
    assert violation_type(exc) == ["COUPON_ALREADY_REDEEMED"]


def test_check_redeemable_refuses_an_expired_coupon() -> None:
    c = coupon(valid_until=NOW - timedelta(seconds=1))
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(c, VIEWER, "CNY", [OrderLine("tea", "s", 1_000, 1)], NOW)
    assert violation_type(exc) == ["COUPON_EXPIRED"]


def test_coupon_is_expired_at_exactly_valid_until() -> None:
    c = coupon(valid_until=NOW)
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(c, VIEWER, "CNY", [OrderLine("tea", "s", 1_000, 1)], NOW)
    assert violation_type(exc) == ["COUPON_EXPIRED"]


def test_check_redeemable_refuses_an_order_in_another_currency() -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(coupon(), VIEWER, "USD", [OrderLine("tea", "s", 1_000, 1)], NOW)
    assert violation_type(exc) == ["CURRENCY_MISMATCH"]


def test_check_redeemable_refuses_an_order_without_target_goods() -> None:
    c = coupon(target=Target(goods_ids=("tea",)))
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(c, VIEWER, "CNY", [OrderLine("cup", "shop-a", 1_000, 1)], NOW)
    assert violation_type(exc) == ["NOT_APPLICABLE"]


def test_check_redeemable_refuses_an_eligible_subtotal_below_min_spend() -> None:
    c = coupon(fixed(100, min_spend=1_000), Target(goods_ids=("tea",)))
    # 999 eligible; the uncovered cup does not count towards the minimum spend.
    lines = [OrderLine("tea", "shop-a", 333, 3), OrderLine("cup", "shop-a", 5_000, 1)]
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(c, VIEWER, "CNY", lines, NOW)
    assert violation_type(exc) == ["MIN_SPEND_NOT_MET"]


def test_check_redeemable_accepts_an_eligible_subtotal_equal_to_min_spend() -> None:
    c = coupon(fixed(100, min_spend=1_000), Target(goods_ids=("tea",)))
    assert check_redeemable(c, VIEWER, "CNY", [OrderLine("tea", "s", 500, 2)], NOW) == (1_000, 100)


def test_ownership_is_checked_before_the_coupon_state() -> None:
    # Another viewer must not learn whether someone else's coupon is redeemed or expired.
    c = coupon(redeemed_order_id="order-9", valid_until=NOW - timedelta(days=1))
    with pytest.raises(FailedPrecondition) as exc:
        check_redeemable(c, "viewer-2", "CNY", [OrderLine("tea", "s", 1_000, 1)], NOW)
    assert violation_type(exc) == ["COUPON_NOT_OWNED"]


# --- property ---------------------------------------------------------------------------

GOODS = ("g1", "g2", "g3", "g4")
SHOPS = ("s1", "s2", "s3")

terms_strategy = st.one_of(
    st.builds(fixed, st.integers(1, 100_000_000)),
    st.builds(percent, st.integers(1, 99), st.integers(0, 10_000_000)),
)
target_strategy = st.builds(
    Target,
    goods_ids=st.lists(st.sampled_from(GOODS), unique=True, max_size=3).map(tuple),
    shop_ids=st.lists(st.sampled_from(SHOPS), unique=True, max_size=2).map(tuple),
)
lines_strategy = st.lists(
    st.builds(
        OrderLine,
        goods_id=st.sampled_from(GOODS),
        shop_id=st.sampled_from(SHOPS),
        unit_price_minor=st.integers(0, 10_000_000),
        quantity=st.integers(1, 100),
    ),
    max_size=8,
)


@given(terms=terms_strategy, target=target_strategy, lines=lines_strategy)
def test_discount_is_between_zero_and_the_eligible_subtotal(
    terms: CouponTerms, target: Target, lines: list[OrderLine]
) -> None:
    c = coupon(terms, target)
    subtotal = eligible_subtotal(c, lines)
    expected_subtotal = sum(
        x.unit_price_minor * x.quantity
        for x in lines
        if x.goods_id in target.goods_ids or x.shop_id in target.shop_ids
    )
    assert subtotal == expected_subtotal
    discount = discount_for(terms, subtotal)
    assert 0 <= discount <= subtotal
    if terms.kind is CouponKind.PERCENT_OFF:
        assert discount * 100 <= subtotal * terms.percent_off
        if terms.max_discount_minor:
            assert discount <= terms.max_discount_minor
    else:
        assert discount <= terms.amount_off_minor
