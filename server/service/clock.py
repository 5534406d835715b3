"""The service's clock: UTC, injectable so tests can move time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, aware and in UTC, at microsecond precision."""
    return datetime.now(UTC)
