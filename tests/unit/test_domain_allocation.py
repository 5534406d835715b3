"""The grab decision: refusals, grants, the coupons they create and the events they emit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.allocation import grant, refusal
from server.domain.models import (
    CouponKind,
    CouponTerms,
    EventKind,
    Outcome,
    Pool,
    PoolState,
    Target,
    Validity,
)
from server.domain.pools import stop

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
START = NOW - timedelta(minutes=10)
END = NOW + timedelta(hours=1)


def pool(total: int = 10, limit: int = 2, **changes: Any) -> Pool:
    """An open pool (window START..END) with nothing granted yet."""
    base = Pool(
        pool_id="pool-1",
        room_id="room-1",
        title="Flash sale",
        terms=CouponTerms(CouponKind.PERCENT_OFF, percent_off=10, max_discount_minor=500),
        target=Target(goods_ids=("tea",), shop_ids=("shop-a",)),
        total_quantity=total,
        remaining_quantity=total,
        granted_quantity=0,
        withdrawn_quantity=0,
        per_viewer_limit=limit,
        claim_start=START,
        claim_end=END,
        validity=Validity(valid_for=timedelta(hours=24)),
        currency_code="CNY",
        version=3,
        created_at=START - timedelta(hours=1),
        updated_at=START - timedelta(hours=1),
        announced_state=PoolState.OPEN,
    )
    return base.with_changes(**changes)


# --- refusal ----------------------------------------------------------------------------


def test_refusal_is_not_open_yet_with_the_claim_start_before_the_window() -> None:
    p = pool(claim_start=NOW + timedelta(minutes=5), announced_state=PoolState.SCHEDULED)
    result = refusal(p, 0, NOW)
    assert result is not None
    assert result.outcome is Outcome.NOT_OPEN_YET
    assert result.claim_start == NOW + timedelta(minutes=5)
    assert result.remaining_quantity == p.remaining_quantity
    assert result.server_time == NOW
    assert result.coupon is None


@pytest.mark.parametrize("after_end", [timedelta(0), timedelta(seconds=1), timedelta(days=1)])
def test_refusal_is_closed_from_the_end_of_the_window(after_end: timedelta) -> None:
    result = refusal(pool(), 0, END + after_end)
    assert result is not None
    assert result.outcome is Outcome.CLOSED
    assert result.claim_start is None


def test_refusal_is_closed_after_a_stop() -> None:
    stopped, _ = stop(pool(), 3, NOW)
    result = refusal(stopped, 0, NOW)
    assert result is not None
    assert result.outcome is Outcome.CLOSED
    assert result.remaining_quantity == 0


def test_refusal_is_sold_out_when_nothing_remains() -> None:
    p = pool(total=5, remaining_quantity=0, granted_quantity=5)
    result = refusal(p, 0, NOW)
    assert result is not None
    assert result.outcome is Outcome.SOLD_OUT
    assert result.remaining_quantity == 0


@pytest.mark.parametrize("limit", [1, 2, 10])
def test_refusal_is_limit_reached_when_the_viewer_holds_the_limit(limit: int) -> None:
    result = refusal(pool(limit=limit), limit, NOW)
    assert result is not None
    assert result.outcome is Outcome.LIMIT_REACHED
    assert result.remaining_quantity == 10


@pytest.mark.parametrize("held", [0, 1])
def test_refusal_is_none_for_an_open_pool_and_a_viewer_under_the_limit(held: int) -> None:
    assert refusal(pool(limit=2), held, NOW) is None


def test_refusal_is_none_at_exactly_the_claim_start() -> None:
    assert refusal(pool(claim_start=NOW), 0, NOW) is None


def test_refusal_is_none_in_an_unbounded_window_long_after_start() -> None:
    assert refusal(pool(claim_end=None), 0, NOW + timedelta(days=400)) is None


# --- grant ------------------------------------------------------------------------------


def test_grant_takes_one_coupon_from_the_remaining_stock() -> None:
    p = pool(total=10, remaining_quantity=6, granted_quantity=4)
    after, coupon, events = grant(p, "viewer-1", "coupon-1", "CODE1", NOW)
    assert after.remaining_quantity == 5
    assert after.granted_quantity == 5
    assert after.total_quantity == 10
    assert [e.kind for e in events] == [EventKind.STOCK_CHANGED]
    assert events[0].pool.remaining_quantity == 5
    assert coupon.viewer_id == "viewer-1"
    assert (coupon.coupon_id, coupon.code) == ("coupon-1", "CODE1")


def test_grant_of_the_last_coupon_announces_sold_out() -> None:
    p = pool(total=3, remaining_quantity=1, granted_quantity=2)
    after, _, events = grant(p, "viewer-1", "coupon-1", "CODE1", NOW)
    assert after.remaining_quantity == 0
    assert after.granted_quantity == 3
    assert [e.kind for e in events] == [EventKind.STOCK_CHANGED, EventKind.POOL_SOLD_OUT]
    assert after.announced_state is PoolState.SOLD_OUT
    assert events[-1].pool == after
    assert after.state_at(NOW) is PoolState.SOLD_OUT


def test_grant_announces_the_opening_the_ticker_has_not_announced_yet() -> None:
    p = pool(announced_state=PoolState.SCHEDULED)
    after, _, events = grant(p, "viewer-1", "coupon-1", "CODE1", NOW)
    assert [e.kind for e in events] == [EventKind.POOL_OPENED, EventKind.STOCK_CHANGED]
    assert after.announced_state is PoolState.OPEN


def test_coupon_with_relative_validity_lasts_valid_for_from_its_grant() -> None:
    p = pool(validity=Validity(valid_for=timedelta(hours=6)))
    granted_at = NOW + timedelta(minutes=7, microseconds=123)
    _, coupon, _ = grant(p, "viewer-1", "coupon-1", "CODE1", granted_at)
    assert coupon.valid_from == granted_at
    assert coupon.valid_until == granted_at + timedelta(hours=6)


def test_coupon_with_absolute_validity_lasts_until_valid_until() -> None:
    valid_until = END + timedelta(days=2)
    p = pool(validity=Validity(valid_until=valid_until))
    _, early, _ = grant(p, "viewer-1", "coupon-1", "CODE1", NOW)
    _, late, _ = grant(p, "viewer-2", "coupon-2", "CODE2", END - timedelta(seconds=1))
    assert early.valid_until == valid_until
    assert late.valid_until == valid_until


def test_coupon_carries_the_pool_terms_target_and_currency() -> None:
    p = pool()
    _, coupon, _ = grant(p, "viewer-1", "coupon-1", "CODE1", NOW)
    assert coupon.terms == p.terms
    assert coupon.target == p.target
    assert coupon.currency_code == p.currency_code
    assert (coupon.pool_id, coupon.room_id) == (p.pool_id, p.room_id)
    assert coupon.redeemed_order_id is None


# --- property: a sequence of grabs ------------------------------------------------------


@settings(max_examples=150)
@given(
    total=st.integers(1, 15),
    limit=st.integers(1, 4),
    grabs=st.lists(st.integers(0, 5), max_size=60),
)
def test_grabs_never_oversell_nor_exceed_the_per_viewer_limit(
    total: int, limit: int, grabs: list[int]
) -> None:
    p = pool(total=total, limit=limit)
    held: dict[int, int] = {}
    granted = 0
    for i, viewer in enumerate(grabs):
        now = NOW + timedelta(seconds=i)
        refused = refusal(p, held.get(viewer, 0), now)
        if refused is None:
            p, coupon, _ = grant(p, f"viewer-{viewer}", f"c-{i}", f"CODE{i}", now)
            assert coupon.viewer_id == f"viewer-{viewer}"
            held[viewer] = held.get(viewer, 0) + 1
            granted += 1
        else:
            # A refusal is only ever one of these, and explains itself.
            if refused.outcome is Outcome.SOLD_OUT:
                assert p.remaining_quantity == 0
            else:
                assert refused.outcome is Outcome.LIMIT_REACHED
                assert held.get(viewer, 0) == limit
        assert p.granted_quantity + p.remaining_quantity == p.total_quantity == total
        assert p.granted_quantity == granted <= total
        assert p.remaining_quantity >= 0
        assert all(n <= limit for n in held.values())
    # Nobody was turned away while stock and their own allowance remained.
    assert granted == min(total, sum(min(grabs.count(v), limit) for v in set(grabs)))
