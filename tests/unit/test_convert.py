"""Wire conversions that were hand-optimised must agree with protobuf's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from server.api.convert import AllocationEncoder, allocation_out, ts
from server.domain.eligibility import Gap, Missing
from server.domain.models import AllocationResult, Outcome


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
