"""Wire conversions that were hand-optimised must agree with protobuf's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from server.api.convert import (
    AllocationEncoder,
    SnapshotEncoder,
    _varint,
    allocation_out,
    subscription_out,
    ts,
)
from server.domain.eligibility import Gap, Missing, PoolEligibility
from server.domain.models import (
    AllocationResult,
    Coupon,
    CouponKind,
    CouponTerms,
    Outcome,
    Pool,
    PoolState,
    RoomSnapshot,
    SnapshotMessage,
    SnapshotReason,
    Target,
    Validity,
)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_timestamp_conversion_matches_from_datetime(value: datetime) -> None:
    aware = value.replace(tzinfo=UTC)
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(aware)
    assert ts(aware) == expected


_TIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda value: value.replace(tzinfo=UTC))


@given(
    st.sampled_from([o for o in Outcome if o is not Outcome.GRANTED]),
    st.integers(min_value=0, max_value=2**62),
    st.none() | _TIMES,
    st.lists(_TIMES, min_size=1, max_size=3),
)
def test_encoded_refusal_matches_serialized_response(
    outcome: Outcome, remaining: int, claim_start: datetime | None, times: list[datetime]
) -> None:
    encoder = AllocationEncoder()
    for now in times:  # the second and later answers come from the cached prefix
        result = AllocationResult(outcome, remaining, now, claim_start)
        assert encoder.encode(result) == allocation_out(result).SerializeToString()


def test_a_not_eligible_answer_keeps_what_is_missing() -> None:
    encoder = AllocationEncoder()
    now = datetime(2026, 11, 28, tzinfo=UTC)
    missing = (Missing(Gap.WATCH_TIME, "watch 5 more seconds", timedelta(seconds=5)),)
    result = AllocationResult(Outcome.NOT_ELIGIBLE, 0, now, missing=missing)
    wire = encoder.encode(result)
    assert wire == allocation_out(result).SerializeToString()
    assert svc.AllocateResponse.FromString(wire).missing[0].description == "watch 5 more seconds"


@given(
    st.lists(st.integers(min_value=0, max_value=10), max_size=3),
    st.integers(min_value=0, max_value=2**62),
    st.sampled_from(list(SnapshotReason)),
    st.lists(_TIMES, min_size=1, max_size=3),
)
def test_encoded_snapshot_matches_serialized_response(
    remaining: list[int], sequence: int, reason: SnapshotReason, times: list[datetime]
) -> None:
    start = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    pools = tuple(
        _pool(f"pool-{i}", left, start) for i, left in enumerate(remaining)
    )  # open, sold out, scheduled or closed depending on the time
    encoder = SnapshotEncoder()
    for now in times:  # later snapshots of the same state reuse the cached parts
        item = SnapshotMessage(RoomSnapshot("room-1", pools, sequence, now), reason)
        assert encoder.encode(item) == subscription_out(item).SerializeToString()


def _pool(pool_id: str, remaining: int, start: datetime) -> Pool:
    return Pool(
        pool_id=pool_id,
        room_id="room-1",
        title="Flash sale",
        terms=CouponTerms(CouponKind.PERCENT_OFF, percent_off=10, max_discount_minor=500),
        target=Target(goods_ids=("tea",), shop_ids=("shop-a",)),
        total_quantity=10,
        remaining_quantity=remaining,
        granted_quantity=10 - remaining,
        withdrawn_quantity=0,
        per_viewer_limit=1,
        claim_start=start,
        claim_end=start + timedelta(hours=1),
        validity=Validity(valid_for=timedelta(hours=24)),
        currency_code="CNY",
        version=3,
        created_at=start - timedelta(hours=1),
        updated_at=start - timedelta(hours=1),
        announced_state=PoolState.OPEN,
    )


def test_a_snapshot_with_the_viewers_eligibility_is_encoded_in_full() -> None:
    start = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    pool = _pool("pool-1", 3, start)
    gap = Missing(Gap.WATCH_TIME, "watch 9 more seconds", timedelta(seconds=9))
    encoder = SnapshotEncoder()
    shared = SnapshotMessage(RoomSnapshot("room-1", (pool,), 7, start), SnapshotReason.INITIAL)
    mine = SnapshotMessage(shared.snapshot, shared.reason, (PoolEligibility("pool-1", (gap,)),))
    for item in (shared, mine, shared):
        assert encoder.encode(item) == subscription_out(item).SerializeToString()
    decoded = svc.StreamAllocationInfoResponse.FromString(encoder.encode(mine))
    assert decoded.snapshot.viewer_eligibility[0].missing[0].description == "watch 9 more seconds"


_IDS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=70)


@given(
    coupon_id=_IDS,
    code=_IDS,
    viewer_id=_IDS,
    goods=st.lists(_IDS, max_size=5),
    valid_from=_TIMES,
    valid_for=st.integers(min_value=0, max_value=10**9),
    order=st.none() | st.tuples(_IDS.filter(bool), st.none() | _TIMES),
    sequence=st.integers(min_value=0, max_value=2**62),
    remaining=st.integers(min_value=0, max_value=2**62),
    times=st.lists(_TIMES, min_size=1, max_size=3),
)
def test_encoded_grant_matches_serialized_response(
    coupon_id: str,
    code: str,
    viewer_id: str,
    goods: list[str],
    valid_from: datetime,
    valid_for: int,
    order: tuple[str, datetime | None] | None,
    sequence: int,
    remaining: int,
    times: list[datetime],
) -> None:
    encoder = AllocationEncoder()
    pool = _pool("pool-1", 3, datetime(2030, 5, 1, 12, 0, tzinfo=UTC))
    valid_until = min(valid_from + timedelta(seconds=valid_for), datetime.max.replace(tzinfo=UTC))
    targets = [Target(tuple(goods), ("shop-a",)), Target((*goods, "extra"), ())]
    # The second and later grants reuse the pool's encoded terms and target (the same
    # objects, or equal ones); a different target is encoded afresh.
    for i, now in enumerate(times * 2):
        coupon = Coupon(
            coupon_id=coupon_id,
            code=code,
            pool_id=pool.pool_id,
            room_id=pool.room_id,
            viewer_id=viewer_id,
            terms=pool.terms,
            target=targets[i // len(times)] if i % 2 else Target(tuple(goods), ("shop-a",)),
            currency_code="CNY",
            valid_from=valid_from,
            valid_until=valid_until,
            redeemed_order_id=order[0] if order else None,
            lock_expires_at=order[1] if order else None,
            grant_sequence=sequence,
        )
        result = AllocationResult(Outcome.GRANTED, remaining, now, coupon=coupon)
        assert encoder.encode(result) == allocation_out(result).SerializeToString()


@given(
    st.one_of(
        st.integers(min_value=1, max_value=1 << 14),
        st.integers(min_value=1, max_value=1 << 29),
        st.integers(min_value=1, max_value=(1 << 64) - 1),
        st.sampled_from([1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 0xFFFFFFF, 1 << 28]),
    )
)
def test_varint_matches_protobufs_own(value: int) -> None:
    # A UInt64Value is its field tag (0x08) and the value's varint.
    assert b"\x08" + _varint(value) == wrappers_pb2.UInt64Value(value=value).SerializeToString()


def test_varint_of_zero_is_one_byte_and_a_negative_is_refused() -> None:
    assert _varint(0) == b"\x00"
    with pytest.raises(ValueError):
        _varint(-1)
