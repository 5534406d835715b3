"""Two servers on one PostgreSQL database, as a deployment with several processes runs.

SQLite serves one process (its writer lock is in-process), so these run on PostgreSQL only
(tests/pg.py: skipped without one, failed without one when CI is set). The rest of the
integration suite runs on both databases through the `backend` parameter.

Each test holds the pool's row lock from outside while both servers take their grabs, so
both servers' transactions are in flight at once whatever the timing: only the row locks of
their transactions keep them from deciding on the same stale pool.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from client_sdk import AsyncLiveResourceClient, RetryPolicy
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from tests.conftest import ServerHandle, launch
from tests.integration.test_grab_path import count_rows, open_room
from tests.pg import Databases, libpq_url
from tests.support import new_request_id

Factory = Callable[..., AsyncLiveResourceClient]
NO_RETRY = RetryPolicy(max_attempts=1)
SETTLE = 0.5  # time for both servers' transactions to reach the locked pool


@pytest.fixture
async def shared_url() -> AsyncIterator[str]:
    databases = Databases()
    yield await databases.new_url()
    await databases.drop_all()


@pytest.fixture(params=[True, False], ids=["batched", "per-request"])
async def two_servers(
    request: pytest.FixtureRequest, tmp_path: Path, shared_url: str
) -> AsyncIterator[tuple[ServerHandle, ServerHandle]]:
    batching = bool(request.param)
    first = await launch(tmp_path / "a", database_url=shared_url, allocation_batching=batching)
    second = await launch(tmp_path / "b", database_url=shared_url, allocation_batching=batching)
    yield first, second
    await first.running.stop(1.0)
    await second.running.stop(1.0)


@asynccontextmanager
async def pool_row_locked(url: str, pool_id: str) -> AsyncIterator[None]:
    """Hold the pool's row lock from another connection for the duration."""
    conn = await asyncpg.connect(libpq_url(url.rsplit("/", 1)[1]))
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM pools WHERE pool_id = $1 FOR UPDATE", pool_id)
            yield
    finally:
        await conn.close()


async def test_two_servers_grabbing_from_one_pool_never_oversell_it(
    two_servers: tuple[ServerHandle, ServerHandle], shared_url: str, client_factory: Factory
) -> None:
    first, second = two_servers
    pool_id = await open_room(first, client_factory, total=5, limit=1)
    viewers = [
        client_factory("viewer", f"v-{i}", target=server.target, retry=NO_RETRY)
        for i, server in enumerate([first, second] * 6)
    ]
    # Each server has loaded the pool (its view of it) before the race.
    for viewer in viewers[:2]:
        assert (await viewer.allocate(pool_id)).outcome == svc.ALLOCATION_OUTCOME_GRANTED

    async with pool_row_locked(shared_url, pool_id):
        grabs = [asyncio.create_task(v.allocate(pool_id)) for v in viewers[2:]]
        await asyncio.sleep(SETTLE)
        assert not any(g.done() for g in grabs), "the grabs wait for the pool's lock"
    answers = await asyncio.gather(*grabs)

    outcomes = collections.Counter(a.outcome for a in answers)
    assert outcomes == {
        svc.ALLOCATION_OUTCOME_GRANTED: 3,
        svc.ALLOCATION_OUTCOME_SOLD_OUT: 7,
    }, outcomes
    rows = await count_rows(first, "SELECT viewer_id FROM coupons WHERE pool_id = :p", p=pool_id)
    assert len(rows) == 5
    (pool_row,) = await count_rows(
        first,
        "SELECT granted_quantity, remaining_quantity, total_quantity FROM pools WHERE pool_id = :p",
        p=pool_id,
    )
    assert tuple(pool_row) == (5, 0, 5)


async def test_a_retry_sent_to_the_other_server_gets_the_same_coupon(
    two_servers: tuple[ServerHandle, ServerHandle], shared_url: str, client_factory: Factory
) -> None:
    first, second = two_servers
    pool_id = await open_room(first, client_factory, total=5, limit=3)
    on_first, on_second = (
        client_factory("viewer", "twice", target=server.target, retry=NO_RETRY)
        for server in (first, second)
    )
    await on_first.allocate(pool_id)  # both servers know the pool: grabs go to the writers
    await on_second.allocate(pool_id)

    request_id = new_request_id()
    async with pool_row_locked(shared_url, pool_id):
        grabs = [
            asyncio.create_task(client.allocate(pool_id, request_id=request_id))
            for client in (on_first, on_second)
        ]
        await asyncio.sleep(SETTLE)
    one, other = await asyncio.gather(*grabs)

    # One of them granted the third coupon, the limit; the other replays that grant (it is
    # neither refused for the limit nor a second coupon).
    assert one.outcome == other.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    assert one.coupon.code == other.coupon.code
    rows = await count_rows(
        first,
        "SELECT COUNT(*) FROM coupons WHERE viewer_id = 'twice' AND pool_id = :p",
        p=pool_id,
    )
    assert rows[0][0] == 3
