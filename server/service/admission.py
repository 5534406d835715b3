"""Admission control: refuse at once, with a retry hint, what the server cannot queue."""

from __future__ import annotations

from types import TracebackType

from server.domain.errors import Overloaded


class AdmissionGate:
    """Counts calls in flight; above the limit a call is refused instead of queued.

    Used as `with gate.admit():` (a plain class, not a generator: it is on every grab).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0

    def admit(self) -> AdmissionGate:
        """Hold a place for one call, or raise Overloaded (RESOURCE_EXHAUSTED)."""
        if self.in_flight >= self.limit:
            self.refused += 1
            raise Overloaded(
                f"more than {self.limit} grabs in flight; retry after the delay",
                reason="OVERLOADED",
            )
        return self

    def __enter__(self) -> None:
        self.in_flight += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.in_flight -= 1
