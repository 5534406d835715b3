"""The service's clock: UTC, injectable so tests can move time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

Clock = Callable[[], datetime]

utc_now: Clock = partial(datetime.now, UTC)
"""The current time, aware and in UTC, at microsecond precision. A partial, not a function:
every refusal reads the clock, and a call through a partial runs no Python frame."""
