"""Wire conversions that were hand-optimised must agree with protobuf's own."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from server.api.convert import ts


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_timestamp_conversion_matches_from_datetime(value: datetime) -> None:
    aware = value.replace(tzinfo=UTC)
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(aware)
    assert ts(aware) == expected
