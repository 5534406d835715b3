"""RoomSubscription: an asyncio room feed that reconnects and resumes on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2

from ._metadata import Metadata
from ._resume import ResumeState, Verdict

if TYPE_CHECKING:
    from generated.liveresource.v1.resource_allocation_service_pb2_grpc import (
        ResourceAllocationServiceAsyncStub,
    )


class RoomSubscription:
    """Async iterator over a room's StreamAllocationInfoResponse messages, without gap or duplicate.

    Each item is the protobuf ``StreamAllocationInfoResponse`` as the server sent it: check
    ``item.WhichOneof("payload")`` for ``"snapshot"``, ``"event"`` or (only when
    ``include_heartbeats``) ``"heartbeat"``. A snapshot replaces everything known about the room.

    When the stream fails with one of RETRYABLE_STREAM_CODES, the subscription waits (backoff of
    ClientConfig.stream_retry) and reopens it with ``resume_after_sequence=last_sequence``; events
    already delivered are dropped. Other errors, or too many failures in a row, are raised as
    LiveResourceError and end the subscription. Iterate it from one task at a time.

    Create it with AsyncLiveResourceClient.subscribe(); nothing is sent before the first
    iteration. Use ``async with`` or close() to stop it.
    """

    def __init__(
        self,
        stub: ResourceAllocationServiceAsyncStub,
        state: ResumeState,
        metadata: Callable[[], Metadata],
    ) -> None:
        self._stub = stub
        self._state = state
        self._metadata = metadata
        self._call: Any = None
        self._closed_event = asyncio.Event()

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
        """Stop the subscription: cancel the stream; iteration ends (StopAsyncIteration)."""
        self._state.closed = True
        self._closed_event.set()
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def aclose(self) -> None:
        """Same as close(), for ``contextlib.aclosing``."""
        self.close()

    async def __aenter__(self) -> RoomSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> RoomSubscription:
        return self

    async def __anext__(self) -> svc_pb2.StreamAllocationInfoResponse:
        while True:
            if self._state.closed:
                raise StopAsyncIteration
            if self._call is None:
                self._call = self._stub.StreamAllocationInfo(
                    self._state.request(), metadata=self._metadata()
                )
            call = self._call
            try:
                item = await call.read()
            except grpc.RpcError as exc:
                self._call = None
                if self._state.closed:
                    raise StopAsyncIteration from None
                delay = self._state.reconnect_delay(exc)
            except asyncio.CancelledError:
                # close() from another task cancels the call, which surfaces here; a cancellation
                # of this task itself must propagate.
                if self._state.closed and not _cancelling():
                    raise StopAsyncIteration from None
                raise
            else:
                if item is grpc.aio.EOF:
                    self._call = None
                    delay = self._state.ended_delay()
                else:
                    response: svc_pb2.StreamAllocationInfoResponse = item
                    verdict = self._state.admit(response)
                    if verdict is Verdict.DELIVER:
                        return response
                    if verdict is Verdict.SKIP:
                        continue
                    call.cancel()
                    self._call = None
                    delay = self._state.resync_delay()
            await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        # Waiting on the close event lets close() end a backoff at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed_event.wait(), delay)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
