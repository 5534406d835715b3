"""Several server processes over one PostgreSQL: one pool raced through all of them, retries
sent to another process, and a subscriber on one process that sees what the others caused."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from client_sdk import AsyncLiveResourceClient, ClientConfig, mint_token
from generated.liveresource.v1 import events_pb2
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from tests.integration.test_process import ServerProcess, free_port
from tests.pg import Databases, libpq_url
from tests.support import TOKEN_KEY, fixed_pool, room_message, unique

PROCESSES = 3
VIEWERS = 300
COUPONS = 100


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    databases = Databases()
    yield await databases.new_url()
    await databases.drop_all()


def _client(target: str, subject: str, role: str) -> AsyncLiveResourceClient:
    return AsyncLiveResourceClient(
        ClientConfig(target=target, token=mint_token(subject, role, key=TOKEN_KEY))
    )


async def _read_until_sold_out(
    call: grpc.aio.UnaryStreamCall,  # type: ignore[type-arg]
) -> tuple[int, list[events_pb2.RoomEvent]]:
    """The snapshot's sequence (or 0) and the events up to the pool's sell-out."""
    start, events = 0, []
    while True:
        message = await asyncio.wait_for(call.read(), 30)
        assert message is not grpc.aio.EOF
        kind = message.WhichOneof("payload")
        if kind == "snapshot":
            start = message.snapshot.sequence
        elif kind == "event":
            events.append(message.event)
            if message.event.WhichOneof("kind") == "pool_sold_out":
                return start, events


def _check_stream(start: int, events: list[events_pb2.RoomEvent]) -> None:
    position = start
    for event in events:
        assert event.sequence > position, "in order, no duplicate"
        assert event.previous_lifecycle_sequence <= position, "no lifecycle event lost"
        position = event.sequence


async def test_three_processes_share_one_pool_and_one_room_stream(
    tmp_path: Path, pg_url: str
) -> None:
    procs = [
        ServerProcess(tmp_path / f"data-{i}", free_port(), database_url=pg_url)
        for i in range(PROCESSES)
    ]
    procs[0].start()  # the first one migrates the empty database
    await procs[0].wait_serving()
    for proc in procs[1:]:
        proc.start()
    await asyncio.gather(*(p.wait_serving() for p in procs[1:]))
    targets = [p.target for p in procs]
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [svc_grpc.ResourceAllocationServiceStub(c) for c in channels]
    room_id, streamer_id = unique("room"), unique("streamer")
    platform = _client(targets[0], "platform", "platform")
    streamer = _client(targets[1], streamer_id, "streamer")
    watch = (("authorization", "Bearer " + mint_token("watcher", "viewer", key=TOKEN_KEY)),)
    try:
        await platform.register_room(room_message(room_id, streamer_id))
        # The subscriber is on process 2; the pool is created through process 1.
        live = stubs[2].StreamAllocationInfo(
            svc.StreamAllocationInfoRequest(room_id=room_id), metadata=watch
        )
        first = await asyncio.wait_for(live.read(), 10)
        assert first.WhichOneof("payload") == "snapshot"
        pool = (
            await streamer.configure_resources(
                room_id, create_pool=fixed_pool(room_id, total=COUPONS)
            )
        ).pool

        async def grab(i: int) -> tuple[svc.AllocateResponse, svc.AllocateResponse]:
            metadata = (
                ("authorization", "Bearer " + mint_token(f"mp-{i}", "viewer", key=TOKEN_KEY)),
            )
            request = svc.AllocateRequest(request_id=str(uuid.uuid4()), pool_id=pool.pool_id)
            answer = await stubs[i % PROCESSES].Allocate(request, metadata=metadata, timeout=60)
            # The app retries (its answer was lost) and lands on another process.
            retry = await stubs[(i + 1) % PROCESSES].Allocate(
                request, metadata=metadata, timeout=60
            )
            return answer, retry

        answers = await asyncio.gather(*(grab(i) for i in range(VIEWERS)))
        outcomes = Counter(svc.AllocationOutcome.Name(a.outcome) for a, _ in answers)
        assert outcomes == {
            "ALLOCATION_OUTCOME_GRANTED": COUPONS,
            "ALLOCATION_OUTCOME_SOLD_OUT": VIEWERS - COUPONS,
        }
        for answer, retry in answers:
            assert retry.outcome == answer.outcome
            assert retry.coupon.code == answer.coupon.code
        codes = [a.coupon.code for a, _ in answers if a.HasField("coupon")]
        assert len(set(codes)) == COUPONS

        database = pg_url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(libpq_url(database))
        try:
            per_viewer = await conn.fetch(
                "SELECT viewer_id, count(*) AS n FROM coupons WHERE pool_id = $1 "
                "GROUP BY viewer_id",
                pool.pool_id,
            )
            remaining = await conn.fetchval(
                "SELECT remaining_quantity FROM pools WHERE pool_id = $1", pool.pool_id
            )
        finally:
            await conn.close()
        assert len(per_viewer) == COUPONS and max(r["n"] for r in per_viewer) == 1
        assert remaining == 0

        # Process 2 saw, in order, what processes 0, 1 and 2 committed.
        _, seen = await _read_until_sold_out(live)
        _check_stream(first.snapshot.sequence, seen)
        kinds = [e.WhichOneof("kind") for e in seen]
        assert kinds[0] == "pool_opened" and kinds[-1] == "pool_sold_out"
        # Stock only falls; the sell-out (stock 0) supersedes the change to 0 before it (and
        # every change, when all grabs land within one stock interval).
        stock = [
            e.stock_changed.remaining_quantity
            for e in seen
            if e.WhichOneof("kind") == "stock_changed"
        ]
        assert stock == sorted(stock, reverse=True)
        live.cancel()

        # Resuming on another process after the first event gives the same lifecycle
        # events after it, and the same final stock.
        resume_from = seen[0].sequence
        again = stubs[0].StreamAllocationInfo(
            svc.StreamAllocationInfoRequest(room_id=room_id, resume_after_sequence=resume_from),
            metadata=watch,
        )
        start, replayed = await _read_until_sold_out(again)
        assert start == 0, "a resume within retention gets events, not a snapshot"
        _check_stream(resume_from, replayed)
        assert [e.sequence for e in replayed if e.WhichOneof("kind") != "stock_changed"] == [
            e.sequence for e in seen[1:] if e.WhichOneof("kind") != "stock_changed"
        ]
        assert replayed[-1].WhichOneof("kind") == "pool_sold_out"
        again.cancel()
    finally:
        for channel in channels:
            await channel.close()
        for client in (platform, streamer):
            await client.close()
        for proc in procs:
            assert proc.terminate() == 0, proc.stderr()
