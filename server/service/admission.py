"""Admission control: refuse at once, with a retry hint, what the server cannot queue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from server.domain.errors import Overloaded


class AdmissionGate:
    """Counts calls in flight; above the limit a call is refused instead of queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one call, or raise Overloaded (RESOURCE_EXHAUSTED)."""
        if self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(
                f"more than {self.limit} grabs in flight; retry after the delay",
                reason="OVERLOADED",
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
