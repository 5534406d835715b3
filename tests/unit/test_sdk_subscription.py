"""Room subscriptions of both SDK clients: resume after drops, dedupe, gaps, errors, close()."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest

from client_sdk import (
    AsyncLiveResourceClient,
    ClientConfig,
    LiveResourceClient,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    UnavailableError,
    events_pb2,
)
from client_sdk._resume import ResumeState, Verdict
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from tests.unit.sdk_fakes import serving

Response = svc_pb2.StreamAllocationInfoResponse
FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.005)
HANG = "hang"
END = "end"


def snap(sequence: int, reason: int = events_pb2.SNAPSHOT_REASON_INITIAL) -> Response:
    return Response(
        snapshot=events_pb2.RoomSnapshot(room_id="r1", sequence=sequence, reason=reason)
    )


def ev(sequence: int, after_lifecycle: int | None = None) -> Response:
    """An event; by default the one before it was a lifecycle event (so none may be skipped)."""
    previous = sequence - 1 if after_lifecycle is None else after_lifecycle
    return Response(
        event=events_pb2.RoomEvent(
            sequence=sequence, pool_id="p1", previous_lifecycle_sequence=previous
        )
    )


def hb(sequence: int) -> Response:
    return Response(heartbeat=events_pb2.Heartbeat(sequence=sequence))


def describe(item: Response) -> str:
    kind = item.WhichOneof("payload")
    return f"{kind}@{getattr(item, kind).sequence}"


Script = tuple[Sequence[Response], Any]
"""What one connection sends, then how it ends: a StatusCode, HANG or END."""


class ScriptedRoom(svc_grpc.ResourceAllocationServiceServicer):
    """Plays one script per connection (the last one again once they run out)."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.resumes: list[int] = []
        self._lock = threading.Lock()

    def StreamAllocationInfo(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with self._lock:
            self.resumes.append(request.resume_after_sequence)
            items, ending = self.scripts[min(len(self.resumes), len(self.scripts)) - 1]
        yield from items
        if ending == HANG:
            while context.is_active():
                time.sleep(0.005)
        elif ending != END:
            context.abort(ending, f"scripted {ending.name}")


@pytest.fixture(params=["sync", "async"])
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Any] = []

    def make(target: str) -> Any:
        config = ClientConfig(target=target, token="t", stream_retry=FAST)
        kind = LiveResourceClient if request.param == "sync" else AsyncLiveResourceClient
        clients.append(kind(config))
        return clients[-1]

    yield make
    for client in clients:
        closing = client.close()
        if inspect.isawaitable(closing):
            await closing


async def take(subscription: Any, count: int) -> list[str]:
    """The first ``count`` items of a sync or async subscription, described."""
    seen: list[str] = []
    if hasattr(subscription, "__anext__"):
        async for item in subscription:
            seen.append(describe(item))
            if len(seen) == count:
                break
    else:
        for item in subscription:
            seen.append(describe(item))
            if len(seen) == count:
                break
    return seen


async def test_resumes_after_drops_without_duplicate_or_gap(
    make_client: Callable[..., Any],
) -> None:
    room = ScriptedRoom(
        ([snap(0), ev(1), ev(2), ev(3)], grpc.StatusCode.UNAVAILABLE),
        # A careless server replays events the client already has: they must be dropped.
        ([ev(2), ev(3), ev(4), ev(5), ev(6)], grpc.StatusCode.UNAVAILABLE),
        ([ev(7), ev(8), ev(9)], grpc.StatusCode.INTERNAL),
        ([ev(10)], HANG),
    )
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1")
        seen = await take(subscription, 11)
        subscription.close()
    assert seen == ["snapshot@0"] + [f"event@{n}" for n in range(1, 11)]
    assert room.resumes == [0, 3, 6, 9]
    assert subscription.reconnects == 3
    assert subscription.last_sequence == 10


async def test_heartbeats_are_skipped_unless_asked_for(make_client: Callable[..., Any]) -> None:
    script: Script = ([snap(0), hb(0), ev(1), hb(1), ev(2)], HANG)
    with serving(ScriptedRoom(script)) as target:
        client = make_client(target)
        quiet = client.subscribe("r1")
        assert await take(quiet, 3) == ["snapshot@0", "event@1", "event@2"]
        quiet.close()
        chatty = client.subscribe("r1", include_heartbeats=True)
        assert await take(chatty, 4) == ["snapshot@0", "heartbeat@0", "event@1", "heartbeat@1"]
        chatty.close()


async def test_resume_point_too_old_replaces_state_with_snapshot(
    make_client: Callable[..., Any],
) -> None:
    too_old = snap(5, events_pb2.SNAPSHOT_REASON_RESUME_TOO_OLD)
    room = ScriptedRoom(([too_old, ev(6), ev(7)], HANG))
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1", resume_after_sequence=50)
        assert await take(subscription, 3) == ["snapshot@5", "event@6", "event@7"]
        subscription.close()
    assert room.resumes == [50]
    assert subscription.last_sequence == 7


async def test_lost_lifecycle_event_triggers_a_resume(make_client: Callable[..., Any]) -> None:
    # ev(4) says event 3 was a lifecycle event: the stream must not skip it.
    room = ScriptedRoom(
        ([snap(0), ev(1), ev(2), ev(4)], HANG),
        ([ev(3), ev(4), ev(5)], HANG),
    )
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1")
        seen = await take(subscription, 6)
        subscription.close()
    assert seen == ["snapshot@0", "event@1", "event@2", "event@3", "event@4", "event@5"]
    assert room.resumes == [0, 2]
    assert subscription.reconnects == 1


async def test_coalesced_stock_changes_are_not_a_gap(make_client: Callable[..., Any]) -> None:
    # Events 3-5 were stock changes coalesced away: 6 names 2 as the lifecycle event before it.
    room = ScriptedRoom(([snap(0), ev(1), ev(2), ev(6, after_lifecycle=2), ev(7)], HANG))
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1")
        seen = await take(subscription, 5)
        subscription.close()
    assert seen == ["snapshot@0", "event@1", "event@2", "event@6", "event@7"]
    assert room.resumes == [0]
    assert subscription.reconnects == 0


async def test_stream_ended_by_server_is_reopened(make_client: Callable[..., Any]) -> None:
    room = ScriptedRoom(([snap(0), ev(1)], END), ([ev(2)], HANG))
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1")
        assert await take(subscription, 3) == ["snapshot@0", "event@1", "event@2"]
        subscription.close()
    assert room.resumes == [0, 1]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    ],
)
async def test_non_retryable_error_ends_the_subscription(
    make_client: Callable[..., Any], code: grpc.StatusCode, error: type[Exception]
) -> None:
    room = ScriptedRoom(([], code))
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1")
        with pytest.raises(error):
            await take(subscription, 1)
    assert room.resumes == [0]
    assert subscription.closed
    assert subscription.reconnects == 0


async def test_gives_up_after_repeated_failures_without_progress(
    make_client: Callable[..., Any],
) -> None:
    room = ScriptedRoom(([], grpc.StatusCode.UNAVAILABLE))
    with serving(room) as target:
        subscription = make_client(target).subscribe("r1", resume_after_sequence=4)
        with pytest.raises(UnavailableError):
            await take(subscription, 1)
    assert room.resumes == [4] * FAST.max_attempts


async def test_async_close_from_another_task_ends_iteration() -> None:
    room = ScriptedRoom(([snap(0)], HANG))
    with serving(room) as target:
        async with AsyncLiveResourceClient(ClientConfig(target=target, token="t")) as client:
            subscription = client.subscribe("r1")
            assert describe(await anext(subscription)) == "snapshot@0"
            asyncio.get_running_loop().call_later(0.05, subscription.close)
            with pytest.raises(StopAsyncIteration):
                await anext(subscription)


def test_sync_close_from_another_thread_ends_iteration() -> None:
    room = ScriptedRoom(([snap(0)], HANG))
    with (
        serving(room) as target,
        LiveResourceClient(ClientConfig(target=target, token="t")) as client,
    ):
        subscription = client.subscribe("r1")
        assert describe(next(subscription)) == "snapshot@0"
        threading.Timer(0.05, subscription.close).start()
        assert list(subscription) == []


async def test_closing_the_client_closes_its_subscriptions() -> None:
    room = ScriptedRoom(([snap(0)], HANG))
    with serving(room) as target:
        client = AsyncLiveResourceClient(ClientConfig(target=target, token="t"))
        subscription = client.subscribe("r1")
        await anext(subscription)
        await client.close()
        assert subscription.closed
        with pytest.raises(StopAsyncIteration):
            await anext(subscription)


def test_resume_state_drops_duplicates_and_flags_gaps() -> None:
    state = ResumeState("r1", resume_after_sequence=3, include_heartbeats=False, policy=FAST)
    assert state.request().resume_after_sequence == 3
    assert state.admit(ev(3)) is Verdict.SKIP
    assert state.admit(ev(4)) is Verdict.DELIVER
    assert state.admit(hb(4)) is Verdict.SKIP
    assert state.admit(ev(6)) is Verdict.RESYNC
    assert state.last_sequence == 4
    assert state.admit(snap(2, events_pb2.SNAPSHOT_REASON_RESUME_UNKNOWN)) is Verdict.DELIVER
    assert state.last_sequence == 2
    assert state.request().resume_after_sequence == 2


def test_resume_state_rejects_a_negative_resume_point() -> None:
    with pytest.raises(ValueError, match="negative"):
        ResumeState("r1", resume_after_sequence=-1, include_heartbeats=False, policy=FAST)
