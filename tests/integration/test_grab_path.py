"""The batched grab path: same guarantees as one transaction per grab, under faults,
restarts, bursts and overload; and the metrics that show it."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from client_sdk import (
    AsyncLiveResourceClient,
    InvalidArgumentError,
    RetryPolicy,
    UnavailableError,
    mint_token,
)
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from server.service.grants import SLOW_BATCH_S
from server.store.interface import Store, Transaction
from tests.conftest import ServerHandle, launch
from tests.integration.test_stream import raw_stream, read_non_heartbeat
from tests.support import TOKEN_KEY, fixed_pool, new_request_id, room_message, unique

Factory = Callable[..., AsyncLiveResourceClient]
NO_RETRY = RetryPolicy(max_attempts=1)


class FlakyStore:
    """A Store whose next write transactions fail after their writes, before the commit;
    it counts the read transactions too."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.fail_writes = 0
        self.failed = 0
        self.reads = 0
        self.slow_writes_s = 0.0
        """Write transactions wait this long after their writes, before the commit."""

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def add_commit_listener(self, listener: Any) -> None:
        self.inner.add_commit_listener(listener)

    def add_resync_listener(self, listener: Any) -> None:
        self.inner.add_resync_listener(listener)

    async def prune_events(self, older_than: Any) -> int:
        return await self.inner.prune_events(older_than)

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[Transaction]:
        self.reads += not write
        async with self.inner.transaction(write=write) as tx:
            yield tx
            if write and self.slow_writes_s:
                await asyncio.sleep(self.slow_writes_s)
            if write and self.fail_writes > 0:
                self.fail_writes -= 1
                self.failed += 1
                raise RuntimeError("injected failure at commit")


async def count_rows(handle: ServerHandle, sql: str, **params: object) -> Any:
    engine = create_async_engine(handle.settings.resolved_database_url())
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).all()
    finally:
        await engine.dispose()


async def open_room(handle: ServerHandle, factory: Factory, total: int, limit: int = 1) -> str:
    return (await open_room_ids(handle, factory, total, limit))[1]


async def open_room_ids(
    handle: ServerHandle, factory: Factory, total: int, limit: int = 1
) -> tuple[str, str]:
    """A new room with one open pool: (room_id, pool_id)."""
    room_id, streamer_id = unique("room"), unique("streamer")
    await factory("platform", "p", target=handle.target).register_room(
        room_message(room_id, streamer_id)
    )
    streamer = factory("streamer", streamer_id, target=handle.target)
    created = await streamer.configure_resources(
        room_id, create_pool=fixed_pool(room_id, total=total, limit=limit)
    )
    return room_id, created.pool.pool_id


@pytest.fixture
async def flaky(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[ServerHandle, FlakyStore]]:
    stores: list[FlakyStore] = []

    def wrap(store: Store) -> Store:
        stores.append(FlakyStore(store))
        return stores[0]

    handle = await launch(tmp_path, database_url=database_url, wrap_store=wrap)
    yield handle, stores[0]
    await handle.running.stop(1.0)


async def test_a_stampede_on_a_pool_not_yet_grabbed_reads_it_once_not_once_per_grab(
    flaky: tuple[ServerHandle, FlakyStore], client_factory: Factory
) -> None:
    handle, store = flaky
    pool_id = await open_room(handle, client_factory, total=100)
    viewers = [client_factory("viewer", f"herd-{i}", target=handle.target) for i in range(300)]
    reads = store.reads
    answers = await asyncio.gather(*(v.allocate(pool_id) for v in viewers))
    outcomes = collections.Counter(svc.AllocationOutcome.Name(a.outcome) for a in answers)
    assert outcomes == {"ALLOCATION_OUTCOME_GRANTED": 100, "ALLOCATION_OUTCOME_SOLD_OUT": 200}
    # The pool's eligibility rule and (one process on the store) its committed view: one
    # read each, shared by every grab that arrived while it ran.
    assert store.reads - reads <= 2, f"{store.reads - reads} read transactions for 300 grabs"


async def test_a_commit_that_fails_mid_batch_loses_nothing_and_grants_once_on_retry(
    flaky: tuple[ServerHandle, FlakyStore], client_factory: Factory
) -> None:
    handle, store = flaky
    pool_id = await open_room(handle, client_factory, total=30)
    viewers = [
        client_factory("viewer", f"flaky-{i}", target=handle.target, retry=NO_RETRY)
        for i in range(40)
    ]
    request_ids = [new_request_id() for _ in viewers]
    store.fail_writes = 1  # the first grant batch fails at commit

    async def grab(i: int) -> svc.AllocateResponse | UnavailableError:
        try:
            return await viewers[i].allocate(pool_id, request_id=request_ids[i])
        except UnavailableError as exc:
            return exc

    first = await asyncio.gather(*(grab(i) for i in range(len(viewers))))
    failed = [i for i, r in enumerate(first) if isinstance(r, UnavailableError)]
    assert store.failed == 1 and failed, "the injected failure reached some callers"
    assert all(first[i].reason == "COMMIT_FAILED" for i in failed)  # type: ignore[union-attr]
    acknowledged = {
        i: r.coupon.code
        for i, r in enumerate(first)
        if not isinstance(r, Exception) and r.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    }

    second = await asyncio.gather(*(grab(i) for i in range(len(viewers))))
    assert not any(isinstance(r, Exception) for r in second)
    for i, code in acknowledged.items():
        assert second[i].coupon.code == code, "an acknowledged grant must never change"  # type: ignore[union-attr]
    granted = [r for r in second if r.outcome == svc.ALLOCATION_OUTCOME_GRANTED]  # type: ignore[union-attr]
    assert len(granted) == 30
    rows = await count_rows(handle, "SELECT viewer_id FROM coupons WHERE pool_id = :p", p=pool_id)
    assert len(rows) == 30 and len({r[0] for r in rows}) == 30
    (pool_row,) = await count_rows(
        handle,
        "SELECT granted_quantity, remaining_quantity, total_quantity FROM pools WHERE pool_id = :p",
        p=pool_id,
    )
    assert tuple(pool_row) == (30, 0, 30)


async def test_a_grant_batch_that_rolls_back_publishes_nothing_to_the_room(
    flaky: tuple[ServerHandle, FlakyStore], client_factory: Factory
) -> None:
    handle, store = flaky
    room_id, pool_id = await open_room_ids(handle, client_factory, total=10)
    channel, call = await raw_stream(handle.target, room_id)
    try:
        snapshot = (await read_non_heartbeat(call)).snapshot
        first, second = (
            client_factory("viewer", unique("rollback"), target=handle.target, retry=NO_RETRY)
            for _ in range(2)
        )
        request_id = new_request_id()
        store.fail_writes = 1
        with pytest.raises(UnavailableError):
            await first.allocate(pool_id, request_id=request_id)
        # The retry commits, then another viewer's grab: the room hears of exactly these
        # two, numbered right after its snapshot; the rolled-back batch left no event.
        retried = await first.allocate(pool_id, request_id=request_id)
        assert retried.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        assert (await second.allocate(pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
        events = [(await read_non_heartbeat(call)).event for _ in range(2)]
        assert [(e.sequence, e.stock_changed.remaining_quantity) for e in events] == [
            (snapshot.sequence + 1, 9),
            (snapshot.sequence + 2, 8),
        ]
    finally:
        await channel.close()


async def test_restart_with_an_open_pool_reloads_its_state_and_goes_on(
    tmp_path: Path, database_url: str, client_factory: Factory
) -> None:
    handle = await launch(tmp_path, database_url=database_url)
    pool_id = await open_room(handle, client_factory, total=10, limit=1)
    early = {f"early-{i}": new_request_id() for i in range(4)}
    codes = {}
    for viewer, rid in early.items():
        answer = await client_factory("viewer", viewer, target=handle.target).allocate(
            pool_id, request_id=rid
        )
        codes[viewer] = answer.coupon.code
    await handle.running.stop(1.0)

    handle = await launch(tmp_path, database_url=database_url)
    try:
        for viewer, rid in early.items():
            client = client_factory("viewer", viewer, target=handle.target)
            # The retry of a grant made before the restart returns the same coupon...
            assert (await client.allocate(pool_id, request_id=rid)).coupon.code == codes[viewer]
            # ...and the viewer's limit still counts it.
            again = await client.allocate(pool_id)
            assert again.outcome == svc.ALLOCATION_OUTCOME_LIMIT_REACHED
        late = [client_factory("viewer", f"late-{i}", target=handle.target) for i in range(10)]
        answers = await asyncio.gather(*(c.allocate(pool_id) for c in late))
        outcomes = collections.Counter(a.outcome for a in answers)
        assert outcomes == {
            svc.ALLOCATION_OUTCOME_GRANTED: 6,
            svc.ALLOCATION_OUTCOME_SOLD_OUT: 4,
        }
    finally:
        await handle.running.stop(1.0)


async def test_a_burst_of_5000_grabs_gets_no_cancelled(
    tmp_path: Path, database_url: str, client_factory: Factory
) -> None:
    handle = await launch(tmp_path, database_url=database_url)
    try:
        pool_id = await open_room(handle, client_factory, total=2000)
        channels = [
            grpc.aio.insecure_channel(
                handle.target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(4)
        ]
        stubs = [svc_grpc.ResourceAllocationServiceStub(c) for c in channels]
        tokens = [mint_token(f"burst-{i}", "viewer", key=TOKEN_KEY) for i in range(5000)]

        async def grab(i: int) -> grpc.StatusCode:
            try:
                await stubs[i % 4].Allocate(
                    svc.AllocateRequest(request_id=new_request_id(), pool_id=pool_id),
                    metadata=(("authorization", f"Bearer {tokens[i]}"),),
                    timeout=60,
                )
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        codes = collections.Counter(await asyncio.gather(*(grab(i) for i in range(5000))))
        for channel in channels:
            await channel.close()
        assert codes == {grpc.StatusCode.OK: 5000}, codes
        (row,) = await count_rows(
            handle, "SELECT granted_quantity FROM pools WHERE pool_id = :p", p=pool_id
        )
        assert row[0] == 2000
    finally:
        await handle.running.stop(1.0)


async def test_above_the_admission_limit_grabs_are_refused_with_retry_info_and_sdk_retries(
    tmp_path: Path, database_url: str, client_factory: Factory
) -> None:
    handle = await launch(tmp_path, database_url=database_url, admission_limit=4)
    try:
        pool_id = await open_room(handle, client_factory, total=100)
        raw = [
            client_factory("viewer", f"busy-{i}", target=handle.target, retry=NO_RETRY)
            for i in range(60)
        ]
        answers = await asyncio.gather(*(c.allocate(pool_id) for c in raw), return_exceptions=True)
        refused = [a for a in answers if isinstance(a, Exception)]
        assert refused, "60 grabs at once must exceed an admission limit of 4"
        for error in refused:
            assert getattr(error, "code", None) == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert getattr(error, "retry_delay", None), "RESOURCE_EXHAUSTED carries RetryInfo"
        patient = [
            client_factory(
                "viewer",
                f"patient-{i}",
                target=handle.target,
                retry=RetryPolicy(max_attempts=50, initial_backoff=0.01, max_backoff=0.2),
            )
            for i in range(60)
        ]
        settled = await asyncio.gather(*(c.allocate(pool_id) for c in patient))
        assert all(a.outcome == svc.ALLOCATION_OUTCOME_GRANTED for a in settled)
    finally:
        await handle.running.stop(1.0)


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "per-request"])
async def test_both_grab_paths_hold_totals_limits_and_idempotency_under_a_race(
    tmp_path: Path, database_url: str, client_factory: Factory, batching: bool
) -> None:
    handle = await launch(tmp_path, database_url=database_url, allocation_batching=batching)
    try:
        pool_id = await open_room(handle, client_factory, total=40, limit=2)
        viewers = [client_factory("viewer", f"r-{i}", target=handle.target) for i in range(60)]

        async def taps(i: int) -> list[svc.AllocateResponse]:
            out = []
            for _ in range(3):
                rid = new_request_id()
                a, b = await asyncio.gather(
                    viewers[i].allocate(pool_id, request_id=rid),
                    viewers[i].allocate(pool_id, request_id=rid),
                )
                assert a == b
                out.append(a)
            return out

        answers = [
            a for batch in await asyncio.gather(*(taps(i) for i in range(60))) for a in batch
        ]
        granted = [a.coupon for a in answers if a.outcome == svc.ALLOCATION_OUTCOME_GRANTED]
        assert len(granted) == 40 and len({c.code for c in granted}) == 40
        assert max(collections.Counter(c.viewer_id for c in granted).values()) <= 2
        # The winner list's order: every grant numbered once, with no gap, on both paths.
        assert sorted(c.grant_sequence for c in granted) == list(range(1, 41))
        rows = await count_rows(
            handle,
            "SELECT granted_quantity, remaining_quantity FROM pools WHERE pool_id = :p",
            p=pool_id,
        )
        assert tuple(rows[0]) == (40, 0)
    finally:
        await handle.running.stop(1.0)


async def test_metrics_endpoint_shows_calls_outcomes_batches_and_streams(
    tmp_path: Path, database_url: str, client_factory: Factory
) -> None:
    import socket

    # A free port may be taken again before the server binds it: try another one then.
    for attempt in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            handle = await launch(
                tmp_path / str(attempt),
                database_url=database_url,
                metrics_port=port,
                metrics_host="127.0.0.1",
            )
            break
        except OSError:
            if attempt == 4:
                raise
    try:
        pool_id = await open_room(handle, client_factory, total=5)
        viewer = client_factory("viewer", "metered", target=handle.target)
        await viewer.allocate(pool_id)
        await viewer.allocate(pool_id)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url) as reply:
                return str(reply.read().decode())

        rows = await count_rows(handle, "SELECT room_id FROM pools WHERE pool_id = :p", p=pool_id)
        async with viewer.subscribe(rows[0][0]) as sub:
            await asyncio.wait_for(anext(aiter(sub)), 5)
            assert "liveresource_open_streams 1.0" in await asyncio.to_thread(scrape)
        await asyncio.sleep(0.2)
        body = await asyncio.to_thread(scrape)
        assert 'liveresource_rpc_total{code="OK",method="Allocate"} 2.0' in body
        assert 'liveresource_allocate_outcomes_total{outcome="granted"} 1.0' in body
        assert 'liveresource_allocate_outcomes_total{outcome="limit_reached"} 1.0' in body
        # SQLite: the refusal came from memory. PostgreSQL (shared by processes): every
        # grab is decided by the writer, so the refusal was a batch of its own.
        batches = 2 if database_url.startswith("postgresql") else 1
        assert f"liveresource_grant_batch_size_count {batches}.0" in body
        assert f"liveresource_grant_commit_seconds_count {batches}.0" in body
        assert "liveresource_open_streams 0.0" in body
        assert "liveresource_admission_refused_total 0.0" in body
        assert 'liveresource_rpc_duration_seconds_count{method="Allocate"} 2.0' in body
    finally:
        await handle.running.stop(1.0)


async def test_a_refusal_is_the_answer_to_its_request_id_even_after_a_restock(
    tmp_path: Path, database_url: str, client_factory: Factory
) -> None:
    handle = await launch(tmp_path, database_url=database_url)
    try:
        room_id, streamer_id = unique("room"), unique("streamer")
        await client_factory("platform", "p", target=handle.target).register_room(
            room_message(room_id, streamer_id)
        )
        streamer = client_factory("streamer", streamer_id, target=handle.target)
        pool, other = [
            (await streamer.configure_resources(room_id, create_pool=spec)).pool
            for spec in (fixed_pool(room_id, total=1), fixed_pool(room_id, total=5))
        ]
        first = client_factory("viewer", unique("first"), target=handle.target)
        late = client_factory("viewer", unique("late"), target=handle.target, retry=NO_RETRY)
        assert (await first.allocate(pool.pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED
        request_id = new_request_id()
        refused = await late.allocate(pool.pool_id, request_id=request_id)
        assert refused.outcome == svc.ALLOCATION_OUTCOME_SOLD_OUT
        # The same request_id for another pool is another request: refused, nothing taken.
        with pytest.raises(InvalidArgumentError) as reused:
            await late.allocate(other.pool_id, request_id=request_id)
        assert reused.value.reason == "REQUEST_ID_REUSED"
        assert (await streamer.get_pool_stats(room_id, other.pool_id)).remaining_quantity == 5
        await streamer.configure_resources(
            room_id,
            add_stock=svc.AddStock(pool_id=pool.pool_id, expected_version=pool.version, quantity=1),
        )
        # A retry gets the answer its request got, not the coupon restocked since; a new
        # request gets that coupon.
        retried = await late.allocate(pool.pool_id, request_id=request_id)
        assert (retried.outcome, retried.server_time) == (refused.outcome, refused.server_time)
        granted = await late.allocate(pool.pool_id)
        assert granted.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    finally:
        await handle.running.stop(1.0)


async def test_a_slow_grant_batch_is_logged_with_where_its_time_went(
    flaky: tuple[ServerHandle, FlakyStore],
    client_factory: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle, store = flaky
    pool_id = await open_room(handle, client_factory, total=5)
    viewer = client_factory("viewer", unique("slow"), target=handle.target)
    store.slow_writes_s = SLOW_BATCH_S + 0.05
    with caplog.at_level(logging.WARNING, logger="server.service.grants"):
        granted = await viewer.allocate(pool_id)
    assert granted.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    (line,) = [r.getMessage() for r in caplog.records if "grant batch" in r.getMessage()]
    split = re.fullmatch(
        r"grant batch of 1 took (\d+) ms: (\d+) deciding and writing, (\d+) committing", line
    )
    assert split is not None, line
    took, writing, committing = (int(x) for x in split.groups())
    # The store's wait sits between the batch's last statement and its commit.
    assert committing >= SLOW_BATCH_S * 1000 and abs(took - writing - committing) <= 1, line
    store.slow_writes_s = 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server.service.grants"):
        await client_factory("viewer", unique("fast"), target=handle.target).allocate(pool_id)
    assert not [r for r in caplog.records if "grant batch" in r.getMessage()]
