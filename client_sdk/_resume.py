"""Sequence tracking, dedupe and reconnect decisions of a subscription, free of any I/O."""

from __future__ import annotations

import enum

import grpc

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2

from . import _requests
from ._retry import Retrier
from .config import RetryPolicy
from .errors import (
    RETRYABLE_STREAM_CODES,
    LiveResourceError,
    ServerError,
    UnavailableError,
    from_rpc_error,
)


class Verdict(enum.Enum):
    """What to do with one message received on the stream."""

    DELIVER = enum.auto()
    SKIP = enum.auto()
    RESYNC = enum.auto()
    """A lifecycle event was lost: drop the stream and resume from the last sequence applied."""


class ResumeState:
    """The state a subscription carries from one stream to the next.

    ``last_sequence`` is the sequence of the last snapshot or event delivered (or the resume point
    the caller gave). Each reconnect asks for the events after it, and any event at or below it is
    a duplicate and dropped. A snapshot always replaces it, even with a lower number, because the
    server sends one precisely when the client must start over (RESUME_TOO_OLD/RESUME_UNKNOWN/
    LAGGING). Sequence numbers may skip: the server coalesces stock changes. An event whose
    ``previous_lifecycle_sequence`` is above ``last_sequence`` proves a lifecycle event was lost.
    """

    def __init__(
        self,
        room_id: str,
        *,
        resume_after_sequence: int,
        include_heartbeats: bool,
        policy: RetryPolicy,
    ) -> None:
        if resume_after_sequence < 0:
            raise ValueError("resume_after_sequence must not be negative")
        self.room_id = room_id
        self.last_sequence = resume_after_sequence
        self.reconnects = 0
        self.closed = False
        """Set by close() or a fatal error: the subscription yields nothing more."""
        self._include_heartbeats = include_heartbeats
        # With no resume point and no snapshot yet there is nothing to measure a gap against.
        self._has_baseline = resume_after_sequence > 0
        self._retrier = Retrier(policy, RETRYABLE_STREAM_CODES)

    def request(self) -> svc_pb2.StreamAllocationInfoRequest:
        """The request opening the next stream."""
        return _requests.stream_allocation_info(self.room_id, self.last_sequence)

    def admit(self, item: svc_pb2.StreamAllocationInfoResponse) -> Verdict:
        """Classify one message and advance ``last_sequence`` when it is delivered."""
        verdict = self._classify(item)
        if verdict is not Verdict.RESYNC:
            # The stream works: a later failure starts a fresh series of reconnect attempts.
            self._retrier.reset()
        return verdict

    def _classify(self, item: svc_pb2.StreamAllocationInfoResponse) -> Verdict:
        kind = item.WhichOneof("payload")
        if kind == "snapshot":
            self.last_sequence = item.snapshot.sequence
            self._has_baseline = True
            return Verdict.DELIVER
        if kind == "event":
            sequence = item.event.sequence
            if sequence <= self.last_sequence:
                return Verdict.SKIP
            if self._has_baseline and item.event.previous_lifecycle_sequence > self.last_sequence:
                return Verdict.RESYNC
            self.last_sequence = sequence
            self._has_baseline = True
            return Verdict.DELIVER
        if kind == "heartbeat" and self._include_heartbeats:
            return Verdict.DELIVER
        if kind == "eligibility":
            return Verdict.DELIVER
        return Verdict.SKIP

    def reconnect_delay(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before reconnecting after the stream failed; raises when fatal."""
        error = from_rpc_error(exc)
        delay = self._retrier.next_delay(error)
        if delay is None:
            self.closed = True
            raise error from exc
        self.reconnects += 1
        return delay

    def resync_delay(self) -> float:
        """Seconds to wait before reconnecting after a sequence gap; raises when it persists."""
        return self._transient_delay(
            ServerError(
                f"room {self.room_id}: events after sequence {self.last_sequence} keep skipping "
                "numbers",
                code=grpc.StatusCode.DATA_LOSS,
            )
        )

    def ended_delay(self) -> float:
        """Seconds to wait before reconnecting after the server ended the stream with OK."""
        # The contract never ends a subscription normally; a server that does so while shutting
        # down must not end the caller's iteration silently, so treat it like UNAVAILABLE.
        return self._transient_delay(
            UnavailableError(f"room {self.room_id}: the server keeps ending the subscription")
        )

    def _transient_delay(self, give_up: LiveResourceError) -> float:
        delay = self._retrier.next_delay_for_retryable()
        if delay is None:
            self.closed = True
            raise give_up
        self.reconnects += 1
        return delay
