"""SqlStore on PostgreSQL only: what a server with concurrent writers (and other processes on
the same database) relies on, and how PostgreSQL's errors reach the service.

test_store_sql runs everything else on both databases. These tests need a real PostgreSQL
(tests/pg.py: skipped without one, failed without one when CI is set).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.domain.errors import Unavailable
from server.domain.models import EventDraft, EventKind
from server.store.interface import IdempotencyKey, NewCoupon
from server.store.sql_store import SqlStore
from tests.pg import Databases, admin_dsn, require_postgres, sqlalchemy_url
from tests.unit.test_store_sql import NOW, make_coupon, make_pool, raw_rows, seed

SETTLE = 0.3  # long enough for a statement that is not blocked to finish


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    databases = Databases()
    yield await databases.new_url()
    await databases.drop_all()


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(pg_url)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def other(pg_url: str, store: SqlStore) -> AsyncIterator[SqlStore]:
    """A second store on the same database: another server process."""
    s = SqlStore(pg_url)
    await s.start()
    yield s
    await s.close()


async def test_processes_starting_together_on_an_empty_database_both_migrate(
    pg_url: str,
) -> None:
    stores = [SqlStore(pg_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        await seed(stores[0])
        assert len(await raw_rows(stores[1], "SELECT version_num FROM alembic_version")) == 1
    finally:
        for s in stores:
            await s.close()


# --- row locks ----------------------------------------------------------------------------


async def test_a_locked_pool_queues_writers_but_not_readers_nor_coupon_inserts(
    store: SqlStore, other: SqlStore
) -> None:
    await seed(store)
    locked = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with store.transaction(write=True) as tx:
            (pool,) = await tx.get_pools(["pool-1"], for_update=True)
            locked.set()
            await release.wait()
            await tx.update_pool(pool.with_changes(version=2))

    async def writer() -> int:
        async with other.transaction(write=True) as tx:
            pool = await tx.get_pool("pool-1", for_update=True)
            assert pool is not None
            return pool.version

    holding = asyncio.create_task(holder())
    await locked.wait()
    waiting = asyncio.create_task(writer())
    # A reader is not blocked, and sees the pool as committed.
    async with other.transaction(write=False) as tx:
        pool = await tx.get_pool("pool-1")
        assert pool is not None and pool.version == 1
    # Neither is a grant inserting a coupon of that pool (its foreign key check takes a KEY
    # SHARE lock, which FOR NO KEY UPDATE lets through).
    async with asyncio.timeout(5):
        async with other.transaction(write=True) as tx:
            await tx.insert_coupons([NewCoupon(make_coupon(), "req-1", 1, 2)])
    await asyncio.sleep(SETTLE)
    assert not waiting.done(), "a second writer must wait for the pool's lock"
    release.set()
    await holding
    # Once the lock is released the writer reads the pool as the holder committed it.
    assert await asyncio.wait_for(waiting, 5) == 2


async def test_writers_of_two_processes_number_a_room_s_events_without_gap(
    store: SqlStore, other: SqlStore
) -> None:
    await seed(store)
    pool = make_pool()

    async def append(s: SqlStore, n: int) -> int:
        async with s.transaction(write=True) as tx:
            last = await tx.append_events(
                "room-1", [EventDraft(EventKind.STOCK_CHANGED, pool)] * n, NOW
            )
            await asyncio.sleep(0.01)  # hold the room a little: the others queue
            return last

    sizes = [1 + i % 3 for i in range(24)]
    lasts = await asyncio.gather(
        *(append(store if i % 2 else other, n) for i, n in enumerate(sizes))
    )
    assert sorted(lasts)[-1] == sum(sizes)
    async with store.transaction(write=False) as tx:
        events = await tx.events_after("room-1", 0, 1000)
    assert [e.sequence for e in events] == list(range(1, sum(sizes) + 1))


async def test_a_request_id_s_second_unit_of_work_waits_and_replays_the_first(
    store: SqlStore, other: SqlStore
) -> None:
    key = IdempotencyKey("viewer-1", "req-1", "Allocate", "fp")
    recorded = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with store.transaction(write=True) as tx:
            assert await tx.get_answer(key.subject, key.request_id) is None
            await tx.put_answers([(key, "the answer")], NOW)
            recorded.set()
            await release.wait()

    async def second() -> str | None:
        async with other.transaction(write=True) as tx:
            answer = await tx.get_answer(key.subject, key.request_id)
            return None if answer is None else answer.result

    running = asyncio.create_task(first())
    await recorded.wait()
    replaying = asyncio.create_task(second())
    await asyncio.sleep(SETTLE)
    assert not replaying.done(), "the second must wait for the first to end"
    release.set()
    await running
    assert await asyncio.wait_for(replaying, 5) == "the answer"
    # Other request ids do not wait.
    async with asyncio.timeout(5), other.transaction(write=True) as tx:
        assert await tx.get_answer("viewer-1", "req-2") is None


# --- errors -------------------------------------------------------------------------------


async def test_a_serialization_failure_is_unavailable_so_the_caller_retries(
    store: SqlStore,
) -> None:
    await seed(store)
    with pytest.raises(Unavailable) as refused:
        async with store.transaction(write=False) as tx:
            assert await tx.get_pool("pool-1") is not None  # the snapshot is taken here
            async with store.transaction(write=True) as writer:
                await writer.update_pool(make_pool(version=2))
            # Locking the row changed after the snapshot: SQLSTATE 40001.
            await tx._conn.execute(
                text("SELECT version FROM pools WHERE pool_id = 'pool-1' FOR UPDATE")
            )
    assert refused.value.reason == "STORE_CONTENTION"
    assert isinstance(refused.value.__cause__, DBAPIError)
    assert refused.value.__cause__.orig.sqlstate == "40001"  # type: ignore[union-attr]


async def test_a_deadlock_is_unavailable_for_one_and_the_other_commits(
    store: SqlStore, other: SqlStore
) -> None:
    await seed(store, "room-1", "room-2")
    both = asyncio.Barrier(2)

    async def lock_rooms(s: SqlStore, first: str, then: str) -> str:
        async with s.transaction(write=True) as tx:
            lock = "SELECT 1 FROM rooms WHERE room_id = :r FOR UPDATE"
            await tx._conn.execute(text(lock), {"r": first})
            await both.wait()
            await tx._conn.execute(text(lock), {"r": then})
            await tx.append_events(
                "room-1", [EventDraft(EventKind.STOCK_CHANGED, make_pool())], NOW
            )
        return "committed"

    results = await asyncio.gather(
        lock_rooms(store, "room-1", "room-2"),
        lock_rooms(other, "room-2", "room-1"),
        return_exceptions=True,
    )
    assert results.count("committed") == 1, results
    (lost,) = [r for r in results if r != "committed"]
    assert isinstance(lost, Unavailable), results
    assert lost.reason == "STORE_CONTENTION"
    assert lost.__cause__.orig.sqlstate == "40P01"  # type: ignore[union-attr]
    async with store.transaction(write=False) as tx:
        assert [e.sequence for e in await tx.events_after("room-1", 0, 10)] == [1]


async def test_an_unreachable_database_is_unavailable() -> None:
    await require_postgres()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    urls = [
        f"postgresql+asyncpg://postgres@127.0.0.1:{port}/liveresource",
        sqlalchemy_url("lr_test_never_created"),
    ]
    for url in urls:
        s = SqlStore(url)
        try:
            with pytest.raises(Unavailable) as refused:
                async with s.transaction(write=False) as tx:
                    await tx.get_room("room-1")
            assert refused.value.reason == "STORE_UNAVAILABLE", url
        finally:
            await s.close()


async def test_a_connection_lost_mid_transaction_is_unavailable_and_the_store_recovers(
    store: SqlStore,
) -> None:
    await seed(store)
    with pytest.raises(Unavailable) as refused:
        async with store.transaction(write=True) as tx:
            pid = (await tx._conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            admin = await asyncpg.connect(admin_dsn())
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            await tx.update_pool(make_pool(version=2))
    assert refused.value.reason == "STORE_UNAVAILABLE"
    async with store.transaction(write=False) as tx:
        pool = await tx.get_pool("pool-1")
        assert pool is not None and pool.version == 1  # nothing of it was committed


async def test_a_value_the_column_cannot_hold_is_raised_as_a_bug_not_unavailable(
    store: SqlStore,
) -> None:
    # Validation refuses such values before the store; if one slips through, retrying
    # cannot help, so the error must not be Unavailable (the API answers INTERNAL).
    await seed(store)
    with pytest.raises(DBAPIError) as raised:
        async with store.transaction(write=True) as tx:
            await tx.insert_pool(make_pool("pool-2", title="t" * 101))
    assert raised.value.orig.sqlstate == "22001"  # type: ignore[union-attr]


async def test_reads_lock_nothing_even_when_they_look_for_due_pools(store: SqlStore) -> None:
    await seed(store)
    due = NOW + timedelta(hours=2)  # pool-1's window has ended by then
    async with store.transaction(write=True) as holder:
        await holder.get_pool("pool-1", for_update=True)
        async with asyncio.timeout(5), store.transaction(write=False) as tx:
            assert [p.pool_id for p in await tx.pools_due(due)] == ["pool-1"]
        # A writer skips the pool another writer holds (that one announces it).
        async with asyncio.timeout(5), store.transaction(write=True) as tx:
            assert await tx.pools_due(due) == []
