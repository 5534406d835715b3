"""SyncRoomSubscription: the blocking twin of RoomSubscription, with the same resume rules."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2

from ._metadata import Metadata
from ._resume import ResumeState, Verdict

if TYPE_CHECKING:
    from generated.liveresource.v1.resource_allocation_service_pb2_grpc import (
        ResourceAllocationServiceStub,
    )


class SyncRoomSubscription:
    """Blocking iterator over a room's StreamAllocationInfoResponse messages.

    Items, reconnection and deduplication are exactly those of RoomSubscription. close() may be
    called from another thread (or a signal handler) to end a blocked iteration.
    """

    def __init__(
        self,
        stub: ResourceAllocationServiceStub,
        state: ResumeState,
        metadata: Callable[[], Metadata],
    ) -> None:
        self._stub = stub
        self._state = state
        self._metadata = metadata
        self._call: Any = None
        self._closed_event = threading.Event()
        # Guards _call against a close() from another thread racing with a reconnect.
        self._lock = threading.Lock()

    @property
    def room_id(self) -> str:
        """The room subscribed to."""
        return self._state.room_id

    @property
    def last_sequence(self) -> int:
        """Sequence of the last snapshot or event delivered; the next reconnect resumes after it."""
        return self._state.last_sequence

    @property
    def reconnects(self) -> int:
        """How many times the stream was reopened after a failure."""
        return self._state.reconnects

    @property
    def closed(self) -> bool:
        """True once close() was called or a fatal error was raised."""
        return self._state.closed

    def close(self) -> None:
        """Stop the subscription: cancel the stream; iteration ends (StopIteration)."""
        with self._lock:
            self._state.closed = True
            self._closed_event.set()
            if self._call is not None:
                self._call.cancel()
                self._call = None

    def __enter__(self) -> SyncRoomSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> SyncRoomSubscription:
        return self

    def __next__(self) -> svc_pb2.StreamAllocationInfoResponse:
        while True:
            call = self._open()
            try:
                item = next(call)
            except StopIteration:
                self._forget(call)
                delay = self._state.ended_delay()
            except grpc.RpcError as exc:
                self._forget(call)
                if self._state.closed:
                    raise StopIteration from None
                delay = self._state.reconnect_delay(exc)
            else:
                response: svc_pb2.StreamAllocationInfoResponse = item
                verdict = self._state.admit(response)
                if verdict is Verdict.DELIVER:
                    return response
                if verdict is Verdict.SKIP:
                    continue
                call.cancel()
                self._forget(call)
                delay = self._state.resync_delay()
            self._closed_event.wait(delay)

    def _open(self) -> Any:
        with self._lock:
            if self._state.closed:
                raise StopIteration
            if self._call is None:
                self._call = self._stub.StreamAllocationInfo(
                    self._state.request(), metadata=self._metadata()
                )
            return self._call

    def _forget(self, call: Any) -> None:
        with self._lock:
            if self._call is call:
                self._call = None
