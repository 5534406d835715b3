"""The answers recorded for idempotent replays: written as `dumps` writes them (a fresh grant
through its pool's pre-encoded part), read back to the same answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from server.domain.models import AllocationResult, Coupon, CouponKind, CouponTerms, Outcome, Target
from server.store import codec

_TEXT = st.text(max_size=12)  # quotes, backslashes, %, control characters, any script
_TIMES = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)
_TERMS = st.builds(
    CouponTerms,
    st.sampled_from(list(CouponKind)),
    st.integers(0, 10**9),
    st.integers(0, 100),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
)
_TARGETS = st.builds(
    Target, st.lists(_TEXT, max_size=3).map(tuple), st.lists(_TEXT, max_size=2).map(tuple)
)
_COUPONS = st.builds(
    Coupon,
    coupon_id=_TEXT,
    code=_TEXT,
    pool_id=st.sampled_from(["pool-1", "pool-2", 'po"ol%s']),
    room_id=_TEXT,
    viewer_id=_TEXT,
    terms=_TERMS,
    target=_TARGETS,
    currency_code=st.sampled_from(["CNY", "USD"]),
    valid_from=_TIMES,
    valid_until=_TIMES,
    redeemed_order_id=st.none() | _TEXT,
    lock_expires_at=st.none() | _TIMES,
    release_count=st.integers(0, 5),
    grant_sequence=st.integers(0, 2**62),
    stackable=st.booleans(),
)
_ANSWERS = st.builds(
    AllocationResult,
    outcome=st.sampled_from(list(Outcome)),
    remaining_quantity=st.integers(0, 2**62),
    server_time=_TIMES,
    claim_start=st.none() | _TIMES,
    coupon=st.none() | _COUPONS,
    missing=st.just(()),  # a NOT_ELIGIBLE answer's gaps are not recorded
)


_FRESH_GRANTS = st.builds(
    AllocationResult,
    outcome=st.just(Outcome.GRANTED),
    remaining_quantity=st.integers(0, 2**62),
    server_time=_TIMES,
    claim_start=st.none(),
    coupon=_COUPONS.map(lambda c: replace(c, redeemed_order_id=None, lock_expires_at=None)),
    missing=st.just(()),
)


@given(st.lists(_ANSWERS | _FRESH_GRANTS, min_size=1, max_size=4))
def test_a_recorded_answer_is_the_text_dumps_writes_and_reads_back_the_same(
    answers: list[AllocationResult],
) -> None:
    # Several in a row: later ones of the same pool reuse (or replace) its cached part.
    for answer in answers:
        text = codec.allocation_to_json(answer)
        assert text == codec.dumps(codec.allocation_to_dict(answer))
        assert codec.allocation_from_json(text) == answer


def test_a_grant_of_a_pool_whose_terms_changed_is_written_with_the_new_terms() -> None:
    base = dict(
        coupon_id="c1",
        code="k",
        pool_id="pool-9",
        room_id="r",
        viewer_id="v",
        target=Target(("tea",), ()),
        currency_code="CNY",
        valid_from=datetime(2030, 1, 1, tzinfo=UTC),
        valid_until=datetime(2030, 1, 2, tzinfo=UTC),
    )
    for off in (100, 200):
        terms = CouponTerms(CouponKind.FIXED_AMOUNT, amount_off_minor=off)
        grant = AllocationResult(
            Outcome.GRANTED, 5, datetime(2030, 1, 1, tzinfo=UTC), coupon=Coupon(terms=terms, **base)
        )
        assert codec.allocation_from_json(codec.allocation_to_json(grant)) == grant


@given(terms=_TERMS, target=_TARGETS, other=_TERMS)
def test_terms_and_targets_read_back_equal_and_shared_while_their_text_is_the_same(
    terms: CouponTerms, target: Target, other: CouponTerms
) -> None:
    # Each read gets a new string, as each read of a pools row does.
    terms_text, target_text = codec.terms_to_json(terms), codec.target_to_json(target)
    first = codec.terms_from_json("".join(terms_text))
    again = codec.terms_from_json(terms_text[:1] + terms_text[1:])
    assert first == terms and again is first
    goods = codec.target_from_json(target_text[:1] + target_text[1:])
    assert goods == target and codec.target_from_json("".join(target_text)) is goods
    assert codec.terms_from_json(codec.terms_to_json(other)) == other


@given(st.datetimes(min_value=datetime(1, 1, 1), timezones=st.just(UTC)))
def test_microseconds_since_the_epoch_are_exact_and_read_back(value: datetime) -> None:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    exact = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    assert codec.to_us(value) == exact
    assert codec.from_us(exact) == value
