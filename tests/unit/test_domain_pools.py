"""Pool rules: validating a spec, creating a pool and every change with the events it emits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.domain.errors import FailedPrecondition, InvalidArgument, VersionConflict
from server.domain.models import (
    CloseReason,
    CouponKind,
    CouponTerms,
    EventKind,
    Goods,
    Pool,
    PoolSpec,
    PoolState,
    Room,
    Shop,
    Target,
    Validity,
)
from server.domain.options import Limits
from server.domain.pools import add_stock, due_transitions, new_pool, stop, update_window
from server.domain.pools import validate_spec as _validate_spec

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()
PREFIX = "create_pool"

ROOM = Room(
    room_id="room-1",
    streamer_id="streamer-1",
    currency_code="CNY",
    featured_goods=(Goods("tea", "shop-a", "Tea"), Goods("cup", "shop-b", "Cup")),
    linked_shops=(Shop("shop-a", "A", (Goods("tea", "shop-a", "Tea"), Goods("pot", "shop-a"))),),
    created_at=NOW - timedelta(days=1),
)


def spec(**changes: Any) -> PoolSpec:
    base = PoolSpec(
        title="Flash sale",
        terms=CouponTerms(CouponKind.FIXED_AMOUNT, amount_off_minor=500),
        target=Target(goods_ids=("tea", "cup"), shop_ids=("shop-a",)),
        total_quantity=100,
        per_viewer_limit=2,
        claim_start=NOW + timedelta(minutes=5),
        claim_end=NOW + timedelta(hours=1),
        validity=Validity(valid_for=timedelta(days=3)),
    )
    return replace(base, **changes)


def validate_spec(s: PoolSpec) -> None:
    _validate_spec(s, ROOM, LIMITS, NOW, PREFIX)


def violated_fields(s: PoolSpec) -> list[str]:
    with pytest.raises(InvalidArgument) as exc:
        validate_spec(s)
    return [v.field for v in exc.value.violations]


def open_pool(total: int = 10, **changes: Any) -> Pool:
    """A pool created at NOW that opened at once (claim window NOW..NOW+1h)."""
    pool, _ = new_pool(spec(claim_start=None, total_quantity=total), ROOM, "pool-1", NOW)
    return pool.with_changes(**changes)


# --- validate_spec ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "s",
    [
        spec(),
        spec(claim_start=None, claim_end=None),  # opens now, never ends
        spec(claim_start=NOW - timedelta(hours=1)),  # past start means now
        spec(
            terms=CouponTerms(CouponKind.PERCENT_OFF, percent_off=15, max_discount_minor=1_000),
            validity=Validity(valid_until=NOW + timedelta(hours=1, minutes=1)),
        ),
        spec(target=Target(shop_ids=("shop-a",))),
        spec(target=Target(goods_ids=("pot",))),  # a goods only listed in a linked shop
        spec(total_quantity=LIMITS.quantity[0], per_viewer_limit=LIMITS.per_viewer_limit[1]),
        spec(total_quantity=LIMITS.quantity[1], per_viewer_limit=LIMITS.per_viewer_limit[0]),
        spec(claim_start=None, claim_end=NOW + LIMITS.min_claim_window),
        spec(claim_start=None, claim_end=NOW + LIMITS.max_claim_window),
        spec(
            claim_start=NOW + LIMITS.max_claim_start_delay,
            claim_end=NOW + LIMITS.max_claim_start_delay + timedelta(hours=1),
        ),
    ],
    ids=[
        "fixed-relative",
        "unbounded",
        "past-start",
        "percent-absolute-at-min-validity",
        "shop-only",
        "linked-shop-goods",
        "min-quantity-max-limit",
        "max-quantity-min-limit",
        "shortest-window",
        "longest-window",
        "latest-start",
    ],
)
def test_validate_spec_accepts_a_spec_within_the_options(s: PoolSpec) -> None:
    validate_spec(s)


@pytest.mark.parametrize(
    ("s", "field"),
    [
        (spec(total_quantity=LIMITS.quantity[0] - 1), "create_pool.total_quantity"),
        (spec(total_quantity=LIMITS.quantity[1] + 1), "create_pool.total_quantity"),
        (spec(per_viewer_limit=LIMITS.per_viewer_limit[0] - 1), "create_pool.per_viewer_limit"),
        (spec(per_viewer_limit=LIMITS.per_viewer_limit[1] + 1), "create_pool.per_viewer_limit"),
        (spec(target=Target(goods_ids=("tea", "ghost"))), "create_pool.target.goods_ids[1]"),
        # shop-b sells the featured cup but is not linked to the room.
        (spec(target=Target(shop_ids=("shop-b",))), "create_pool.target.shop_ids[0]"),
        (spec(target=Target()), "create_pool.target"),
        (spec(target=Target(goods_ids=("tea", "cup", "tea"))), "create_pool.target.goods_ids[2]"),
        (
            spec(target=Target(shop_ids=("shop-a", "shop-a"))),
            "create_pool.target.shop_ids[1]",
        ),
        (
            spec(terms=CouponTerms(CouponKind.PERCENT_OFF, amount_off_minor=100, percent_off=10)),
            "create_pool.terms.amount_off_minor",
        ),
        (
            spec(terms=CouponTerms(CouponKind.FIXED_AMOUNT, amount_off_minor=100, percent_off=10)),
            "create_pool.terms.percent_off",
        ),
        (
            spec(terms=CouponTerms(CouponKind.PERCENT_OFF, percent_off=100)),
            "create_pool.terms.percent_off",
        ),
        (
            spec(terms=CouponTerms(CouponKind.FIXED_AMOUNT, amount_off_minor=0)),
            "create_pool.terms.amount_off_minor",
        ),
        (
            spec(
                claim_end=None,
                validity=Validity(valid_until=NOW + timedelta(days=2)),
            ),
            "create_pool.validity.valid_until",
        ),
        (
            spec(
                validity=Validity(
                    valid_until=NOW
                    + timedelta(hours=1)
                    + LIMITS.min_validity
                    - timedelta(seconds=1)
                )
            ),
            "create_pool.validity.valid_until",
        ),
        (
            spec(claim_start=None, claim_end=NOW + LIMITS.min_claim_window - timedelta(seconds=1)),
            "create_pool.claim_end_time",
        ),
        (
            spec(
                claim_start=NOW + timedelta(hours=1),
                claim_end=NOW + timedelta(hours=1) + LIMITS.min_claim_window / 2,
            ),
            "create_pool.claim_end_time",
        ),
        (
            spec(claim_start=None, claim_end=NOW + LIMITS.max_claim_window + timedelta(seconds=1)),
            "create_pool.claim_end_time",
        ),
        (
            spec(claim_start=None, claim_end=NOW - timedelta(minutes=1)),
            "create_pool.claim_end_time",
        ),
        (
            spec(
                claim_start=NOW + LIMITS.max_claim_start_delay + timedelta(seconds=1),
                claim_end=None,
            ),
            "create_pool.claim_start_time",
        ),
        (
            spec(
                validity=Validity(valid_until=NOW + timedelta(days=2), valid_for=timedelta(days=1))
            ),
            "create_pool.validity",
        ),
        (spec(validity=Validity()), "create_pool.validity"),
        (
            spec(validity=Validity(valid_for=LIMITS.min_validity - timedelta(seconds=1))),
            "create_pool.validity.valid_for",
        ),
        (
            spec(validity=Validity(valid_for=timedelta(minutes=5, milliseconds=1))),
            "create_pool.validity.valid_for",
        ),
        (spec(title="   "), "create_pool.title"),
    ],
    ids=[
        "quantity-low",
        "quantity-high",
        "limit-low",
        "limit-high",
        "goods-not-in-room",
        "shop-not-linked",
        "empty-target",
        "repeated-goods",
        "repeated-shop",
        "percent-with-amount-off",
        "fixed-with-percent",
        "percent-100",
        "fixed-zero",
        "valid-until-without-claim-end",
        "valid-until-too-close-to-claim-end",
        "window-too-short",
        "scheduled-window-too-short",
        "window-too-long",
        "end-in-past",
        "start-too-far",
        "both-validities",
        "no-validity",
        "valid-for-too-short",
        "valid-for-fractional",
        "blank-title",
    ],
)
def test_validate_spec_rejects_with_the_field_path(s: PoolSpec, field: str) -> None:
    assert violated_fields(s) == [field]


def test_validate_spec_reports_every_violation_at_once() -> None:
    s = spec(total_quantity=0, per_viewer_limit=0, target=Target())
    assert set(violated_fields(s)) == {
        "create_pool.total_quantity",
        "create_pool.per_viewer_limit",
        "create_pool.target",
    }


def test_validate_spec_uses_the_given_prefix() -> None:
    with pytest.raises(InvalidArgument) as exc:
        _validate_spec(spec(total_quantity=0), ROOM, LIMITS, NOW, "pool")
    assert [v.field for v in exc.value.violations] == ["pool.total_quantity"]


# --- new_pool ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", [None, NOW, NOW - timedelta(minutes=3)])
def test_new_pool_opens_at_once_when_the_start_is_not_in_the_future(
    start: datetime | None,
) -> None:
    pool, event = new_pool(spec(claim_start=start), ROOM, "pool-1", NOW)
    assert pool.state_at(NOW) is PoolState.OPEN
    assert pool.announced_state is PoolState.OPEN
    assert pool.claim_start == NOW
    assert event.kind is EventKind.POOL_OPENED
    assert event.pool == pool


def test_new_pool_is_scheduled_when_the_start_is_later() -> None:
    start = NOW + timedelta(minutes=5)
    pool, event = new_pool(spec(claim_start=start), ROOM, "pool-1", NOW)
    assert pool.claim_start == start
    assert pool.state_at(NOW) is PoolState.SCHEDULED
    assert pool.announced_state is PoolState.SCHEDULED
    assert event.kind is EventKind.POOL_SCHEDULED
    assert event.pool == pool


def test_new_pool_starts_full_at_version_one_in_the_room_currency() -> None:
    s = spec(total_quantity=42, title="  Flash sale  ")
    pool, _ = new_pool(s, ROOM, "pool-9", NOW)
    assert (pool.pool_id, pool.room_id, pool.title) == ("pool-9", "room-1", "Flash sale")
    assert (pool.total_quantity, pool.remaining_quantity, pool.granted_quantity) == (42, 42, 0)
    assert pool.withdrawn_quantity == 0
    assert pool.version == 1
    assert pool.currency_code == ROOM.currency_code
    assert pool.closed_at is None


# --- add_stock --------------------------------------------------------------------------


def test_add_stock_increases_total_remaining_and_version() -> None:
    pool = open_pool(total=10, remaining_quantity=6, granted_quantity=4)
    later = NOW + timedelta(minutes=1)
    changed, events = add_stock(pool, 5, pool.version, LIMITS, later, "add_stock.quantity")
    assert changed.total_quantity == 15
    assert changed.remaining_quantity == 11
    assert changed.granted_quantity == 4
    assert changed.version == pool.version + 1
    assert changed.updated_at == later
    assert [e.kind for e in events] == [EventKind.POOL_CHANGED]
    assert events[0].pool == changed


def test_add_stock_reopens_a_sold_out_pool() -> None:
    pool = open_pool(
        total=3, remaining_quantity=0, granted_quantity=3, announced_state=PoolState.SOLD_OUT
    )
    changed, _ = add_stock(pool, 2, pool.version, LIMITS, NOW, "q")
    assert changed.state_at(NOW) is PoolState.OPEN
    assert changed.announced_state is PoolState.OPEN


def test_add_stock_refuses_a_stale_version() -> None:
    pool = open_pool(version=4)
    with pytest.raises(VersionConflict) as exc:
        add_stock(pool, 5, 3, LIMITS, NOW, "q")
    assert (exc.value.expected, exc.value.current) == (3, 4)


def test_add_stock_refuses_a_stopped_pool() -> None:
    stopped, _ = stop(open_pool(), 1, NOW)
    with pytest.raises(FailedPrecondition) as exc:
        add_stock(stopped, 5, stopped.version, LIMITS, NOW, "q")
    assert [v.type for v in exc.value.violations] == ["POOL_CLOSED"]
    assert exc.value.violations[0].subject == "pools/pool-1"


def test_add_stock_refuses_a_pool_whose_window_ended() -> None:
    pool = open_pool()
    assert pool.claim_end is not None
    with pytest.raises(FailedPrecondition) as exc:
        add_stock(pool, 5, pool.version, LIMITS, pool.claim_end, "q")
    assert [v.type for v in exc.value.violations] == ["POOL_CLOSED"]


@pytest.mark.parametrize("quantity", [0, LIMITS.stock_increment[1] + 1])
def test_add_stock_refuses_an_increment_out_of_range(quantity: int) -> None:
    pool = open_pool()
    with pytest.raises(InvalidArgument) as exc:
        add_stock(pool, quantity, pool.version, LIMITS, NOW, "add_stock.quantity")
    assert [v.field for v in exc.value.violations] == ["add_stock.quantity"]


def test_add_stock_refuses_a_total_above_the_quantity_limit() -> None:
    pool = open_pool(total=LIMITS.quantity[1] - 1)
    add_stock(pool, 1, pool.version, LIMITS, NOW, "q")  # exactly the limit is fine
    with pytest.raises(InvalidArgument):
        add_stock(pool, 2, pool.version, LIMITS, NOW, "q")


# --- stop -------------------------------------------------------------------------------


def test_stop_withdraws_the_remaining_stock_and_keeps_the_books_balanced() -> None:
    pool = open_pool(total=10, remaining_quantity=7, granted_quantity=3)
    later = NOW + timedelta(minutes=2)
    stopped, events = stop(pool, pool.version, later)
    assert stopped.remaining_quantity == 0
    assert stopped.granted_quantity == 3
    assert stopped.withdrawn_quantity == 7
    assert stopped.granted_quantity + stopped.remaining_quantity == stopped.total_quantity
    assert stopped.closed_at == later
    assert stopped.close_reason is CloseReason.STOPPED
    assert stopped.state_at(later) is PoolState.CLOSED
    assert stopped.version == pool.version + 1
    assert [e.kind for e in events] == [EventKind.POOL_CLOSED]
    assert events[0].pool == stopped


def test_stop_refuses_an_already_stopped_pool() -> None:
    stopped, _ = stop(open_pool(), 1, NOW)
    with pytest.raises(FailedPrecondition) as exc:
        stop(stopped, stopped.version, NOW)
    assert [v.type for v in exc.value.violations] == ["POOL_CLOSED"]


def test_stop_refuses_a_stale_version() -> None:
    pool = open_pool(version=2)
    with pytest.raises(VersionConflict):
        stop(pool, 1, NOW)


# --- update_window ----------------------------------------------------------------------


def test_update_window_cannot_move_the_start_of_an_opened_pool() -> None:
    pool = open_pool()
    with pytest.raises(InvalidArgument) as exc:
        update_window(
            pool,
            NOW + timedelta(minutes=10),
            NOW + timedelta(hours=2),
            pool.version,
            LIMITS,
            NOW,
            "update",
        )
    assert [v.field for v in exc.value.violations] == ["update.claim_start_time"]


def test_update_window_extends_the_end_of_an_opened_pool_keeping_its_start() -> None:
    pool = open_pool()
    end = NOW + timedelta(hours=3)
    changed, events = update_window(
        pool, pool.claim_start, end, pool.version, LIMITS, NOW, "update"
    )
    assert changed.claim_start == pool.claim_start
    assert changed.claim_end == end
    assert changed.version == pool.version + 1
    assert [e.kind for e in events] == [EventKind.POOL_CHANGED]


def test_update_window_moves_the_start_of_a_scheduled_pool() -> None:
    pool, _ = new_pool(spec(claim_start=NOW + timedelta(minutes=5)), ROOM, "pool-1", NOW)
    start, end = NOW + timedelta(minutes=30), NOW + timedelta(hours=2)
    changed, _ = update_window(pool, start, end, pool.version, LIMITS, NOW, "update")
    assert (changed.claim_start, changed.claim_end) == (start, end)
    assert changed.state_at(NOW) is PoolState.SCHEDULED


def test_update_window_requires_a_start() -> None:
    pool = open_pool()
    with pytest.raises(InvalidArgument) as exc:
        update_window(pool, None, pool.claim_end, pool.version, LIMITS, NOW, "update")
    assert [v.field for v in exc.value.violations] == ["update.claim_start_time"]


def test_update_window_keeps_absolute_validity_reachable() -> None:
    valid_until = NOW + timedelta(hours=2)
    s = spec(claim_start=None, validity=Validity(valid_until=valid_until))
    pool, _ = new_pool(s, ROOM, "pool-1", NOW)
    with pytest.raises(InvalidArgument) as exc:
        update_window(pool, pool.claim_start, valid_until, pool.version, LIMITS, NOW, "update")
    assert [v.field for v in exc.value.violations] == ["update.claim_end_time"]


# --- due_transitions --------------------------------------------------------------------


def test_due_transitions_opens_a_scheduled_pool_whose_start_passed() -> None:
    pool, _ = new_pool(spec(claim_start=NOW + timedelta(minutes=5)), ROOM, "pool-1", NOW)
    later = pool.claim_start + timedelta(seconds=1)
    opened, events = due_transitions(pool, later)
    assert opened.announced_state is PoolState.OPEN
    assert [e.kind for e in events] == [EventKind.POOL_OPENED]
    assert events[0].pool == opened
    assert opened.remaining_quantity == pool.remaining_quantity


def test_due_transitions_closes_an_open_pool_whose_end_passed_and_withdraws_stock() -> None:
    pool = open_pool(total=10, remaining_quantity=4, granted_quantity=6)
    assert pool.claim_end is not None
    later = pool.claim_end + timedelta(minutes=5)
    closed, events = due_transitions(pool, later)
    assert [e.kind for e in events] == [EventKind.POOL_CLOSED]
    assert events[0].pool == closed
    assert closed.close_reason is CloseReason.WINDOW_ENDED
    assert closed.closed_at == pool.claim_end
    assert closed.announced_state is PoolState.CLOSED
    assert closed.remaining_quantity == 0
    assert closed.withdrawn_quantity == 4
    assert closed.granted_quantity == 6
    assert closed.granted_quantity + closed.remaining_quantity == closed.total_quantity


def test_due_transitions_closes_a_sold_out_pool_whose_end_passed() -> None:
    pool = open_pool(
        total=2, remaining_quantity=0, granted_quantity=2, announced_state=PoolState.SOLD_OUT
    )
    assert pool.claim_end is not None
    closed, events = due_transitions(pool, pool.claim_end)
    assert [e.kind for e in events] == [EventKind.POOL_CLOSED]
    assert closed.withdrawn_quantity == 0
    assert closed.total_quantity == 2


@pytest.mark.parametrize("minutes", [0, 30])
def test_due_transitions_emits_nothing_when_nothing_is_due(minutes: int) -> None:
    pool = open_pool()
    same, events = due_transitions(pool, NOW + timedelta(minutes=minutes))
    assert events == []
    assert same == pool


def test_due_transitions_emits_nothing_for_a_scheduled_pool_before_its_start() -> None:
    pool, _ = new_pool(spec(claim_start=NOW + timedelta(minutes=5)), ROOM, "pool-1", NOW)
    same, events = due_transitions(pool, pool.claim_start - timedelta(microseconds=1))
    assert events == []
    assert same == pool


def test_due_transitions_emits_nothing_for_a_stopped_pool() -> None:
    stopped, _ = stop(open_pool(), 1, NOW)
    same, events = due_transitions(stopped, NOW + timedelta(days=1))
    assert events == []
    assert same == stopped
