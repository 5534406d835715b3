"""What the parent sends a load process and what it gets back (picklable, no grpc objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple


class Grab(NamedTuple):
    """One viewer's tap on a pool."""

    viewer_id: str
    pool_id: str


class GrabRecord(NamedTuple):
    """One tap and what each of its attempts (same request_id) got back."""

    viewer_id: str
    pool_id: str
    request_id: str
    statuses: tuple[str, ...]
    """gRPC status name per attempt (OK, RESOURCE_EXHAUSTED, CANCELLED, ...)."""
    outcomes: tuple[str, ...]
    """AllocationOutcome name per attempt ("" when the status was not OK)."""
    codes: tuple[str, ...]
    """Coupon code per attempt ("" when none was granted)."""


@dataclass(frozen=True, kw_only=True)
class Job:
    """A slice of one scenario for one load process."""

    kind: Literal["noop", "grab"]
    target: str
    token_key: str
    channels: int
    timeout_s: float
    noop_calls: int = 0
    grabs: tuple[Grab, ...] = ()
    attempts: int = 1
    """Calls per grab: 2 means the retry with the same request_id after the first answer."""
    targets: tuple[str, ...] = ()
    """Several server processes instead of `target` (grabs only): grab i goes to
    targets[i % n] and each retry to the next process, so no retry lands where its first
    attempt did."""

    @property
    def all_targets(self) -> tuple[str, ...]:
        return self.targets or (self.target,)


@dataclass(kw_only=True)
class WorkerResult:
    """What a load process measured for its slice."""

    started: float
    """time.perf_counter() when it was released (CLOCK_MONOTONIC, same clock in every process)."""
    finished: float
    """time.perf_counter() when its last call finished."""
    cpu_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    grabs: list[GrabRecord] = field(default_factory=list)
