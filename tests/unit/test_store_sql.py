"""SqlStore on a real database, SQLite and PostgreSQL alike (the `backend` parameter):
migrations, round trips, the outbox, the constraints and how database errors are reported."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from server.domain.eligibility import WatchSession
from server.domain.errors import Conflict
from server.domain.models import (
    CloseReason,
    Coupon,
    CouponKind,
    CouponTerms,
    EventDraft,
    EventKind,
    Goods,
    Pool,
    PoolState,
    Redemption,
    RedemptionState,
    Room,
    RoomEvent,
    Shop,
    Target,
    Validity,
)
from server.store import sql_store
from server.store.interface import EventBounds, IdempotencyKey, NewCoupon, StoredAnswer
from server.store.migrate import alembic_config
from server.store.sql_store import SqlStore

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

NOW = datetime(2030, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(database_url)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def make_room(room_id: str = "room-1") -> Room:
    return Room(
        room_id=room_id,
        streamer_id="streamer-1",
        currency_code="CNY",
        featured_goods=(Goods("tea", "shop-a", "Tea"), Goods("cup", "shop-b", "Cup")),
        linked_shops=(
            Shop("shop-a", "Shop A", (Goods("tea", "shop-a", "Tea"), Goods("pot", "shop-a"))),
        ),
        created_at=NOW - timedelta(days=1),
    )


def make_pool(pool_id: str = "pool-1", room_id: str = "room-1", **changes: Any) -> Pool:
    pool = Pool(
        pool_id=pool_id,
        room_id=room_id,
        title="Flash sale",
        terms=CouponTerms(
            CouponKind.PERCENT_OFF, percent_off=15, max_discount_minor=2_000, min_spend_minor=100
        ),
        target=Target(goods_ids=("tea", "cup"), shop_ids=("shop-a",)),
        total_quantity=10,
        remaining_quantity=10,
        granted_quantity=0,
        withdrawn_quantity=0,
        per_viewer_limit=2,
        claim_start=NOW,
        claim_end=NOW + timedelta(hours=1),
        validity=Validity(valid_for=timedelta(days=3)),
        currency_code="CNY",
        version=1,
        created_at=NOW,
        updated_at=NOW,
        announced_state=PoolState.OPEN,
    )
    return pool.with_changes(**changes)


def make_coupon(coupon_id: str = "coupon-1", viewer_id: str = "viewer-1", **changes: Any) -> Coupon:
    pool = make_pool()
    values: dict[str, Any] = {
        "coupon_id": coupon_id,
        "code": f"CODE-{coupon_id}",
        "pool_id": pool.pool_id,
        "room_id": pool.room_id,
        "viewer_id": viewer_id,
        "terms": pool.terms,
        "target": pool.target,
        "currency_code": pool.currency_code,
        "valid_from": NOW,
        "valid_until": NOW + timedelta(days=3),
        # Unique per pool, as the grab path numbers its grants.
        "grant_sequence": next(_GRANT_SEQUENCE),
    }
    values.update(changes)
    return Coupon(**values)


_GRANT_SEQUENCE = itertools.count(1)


async def seed(store: SqlStore, *room_ids: str) -> None:
    """Each room with one pool named pool-<room>, except room-1 whose pool is pool-1."""
    async with store.transaction(write=True) as tx:
        for room_id in room_ids or ("room-1",):
            await tx.insert_room(make_room(room_id))
            pool_id = "pool-1" if room_id == "room-1" else f"pool-{room_id}"
            await tx.insert_pool(make_pool(pool_id, room_id))


async def raw(store: SqlStore, sql: str, **params: Any) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text(sql), params)


async def raw_rows(store: SqlStore, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with store.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]


_INSERT_COUPON = (
    "INSERT INTO coupons (coupon_id, code, pool_id, room_id, viewer_id, request_id, slot, "
    "per_viewer_limit, valid_from_us, valid_until_us, grant_seq) VALUES (:coupon_id, :code, "
    "'pool-1', 'room-1', :viewer_id, :request_id, :slot, :per_viewer_limit, 0, 1000, :seq)"
)


async def raw_coupon(
    store: SqlStore,
    coupon_id: str,
    *,
    viewer_id: str = "viewer-1",
    request_id: str | None = None,
    slot: int = 1,
    per_viewer_limit: int = 2,
) -> None:
    await raw(
        store,
        _INSERT_COUPON,
        coupon_id=coupon_id,
        code=f"CODE-{coupon_id}",
        viewer_id=viewer_id,
        request_id=request_id or f"req-{coupon_id}",
        slot=slot,
        per_viewer_limit=per_viewer_limit,
        seq=next(_GRANT_SEQUENCE),
    )


_INSERT_REDEMPTION = (
    "INSERT INTO redemptions (order_id, coupon_id, fingerprint, eligible_subtotal_minor, "
    "discount_minor, redeemed_at_us, state) "
    "VALUES (:order_id, :coupon_id, 'fp', 1000, 100, 0, 'confirmed')"
)


# --- migrations -------------------------------------------------------------------------


async def test_migrations_run_twice_without_error_and_keep_the_data(
    store: SqlStore, database_url: str
) -> None:
    await seed(store)

    def listeners() -> int:
        return sum(t.get_name() == "pg-notify-listener" for t in asyncio.all_tasks())

    before = listeners()
    await store.start()  # the same store again
    assert listeners() == before  # on PostgreSQL a second LISTEN task was left pending
    second = SqlStore(database_url)  # and a fresh process on the same database
    try:
        await second.start()
        async with second.transaction(write=False) as tx:
            assert await tx.get_room("room-1") == make_room()
            assert await tx.get_pool("pool-1") == make_pool()
    finally:
        await second.close()
    assert await raw_rows(store, "SELECT version_num FROM alembic_version") == [(HEAD,)]


async def test_migrations_create_every_table(store: SqlStore) -> None:
    async with store.engine.connect() as conn:
        names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert names == {
        "alembic_version",
        "rooms",
        "watch_sessions",
        "pools",
        "coupons",
        "redemptions",
        "room_events",
        "idempotency",
    }


# --- round trips ------------------------------------------------------------------------


async def test_room_round_trips_through_insert_and_get(store: SqlStore) -> None:
    room = make_room()
    async with store.transaction(write=True) as tx:
        await tx.insert_room(room)
    async with store.transaction(write=False) as tx:
        assert await tx.get_room("room-1") == room
        assert await tx.get_room("room-2") is None


@pytest.mark.parametrize(
    "pool",
    [
        make_pool(),
        make_pool(claim_end=None, version=7, announced_state=PoolState.SCHEDULED),
        make_pool(
            terms=CouponTerms(CouponKind.FIXED_AMOUNT, amount_off_minor=500),
            validity=Validity(valid_until=NOW + timedelta(days=2, microseconds=1)),
            total_quantity=4,
            remaining_quantity=0,
            granted_quantity=4,
            withdrawn_quantity=6,
            closed_at=NOW + timedelta(minutes=3),
            close_reason=CloseReason.STOPPED,
            announced_state=PoolState.CLOSED,
        ),
    ],
    ids=["open-relative", "scheduled-unbounded", "closed-absolute"],
)
async def test_pool_round_trips_through_insert_and_get(store: SqlStore, pool: Pool) -> None:
    async with store.transaction(write=True) as tx:
        await tx.insert_room(make_room())
        await tx.insert_pool(pool)
    async with store.transaction(write=False) as tx:
        assert await tx.get_pool(pool.pool_id) == pool
        assert await tx.get_pool("pool-unknown") is None


async def test_update_pools_writes_each_pool_its_own_values(store: SqlStore) -> None:
    await seed(store, "room-1", "room-2", "room-3")
    later = NOW + timedelta(minutes=5)
    one = make_pool(remaining_quantity=7, granted_quantity=3, version=2, updated_at=later)
    two = make_pool(
        "pool-room-2",
        "room-2",
        total_quantity=4,
        remaining_quantity=0,
        granted_quantity=4,
        withdrawn_quantity=6,
        claim_end=None,
        validity=Validity(valid_until=NOW + timedelta(days=1)),
        closed_at=later,
        close_reason=CloseReason.STOPPED,
        announced_state=PoolState.CLOSED,
        version=5,
        updated_at=later,
    )
    async with store.transaction(write=True) as tx:
        await tx.update_pools([one])  # columns of NULLs only (closed_at, valid_until)
    async with store.transaction(write=True) as tx:
        await tx.update_pools([two, one])  # NULLs beside values
    async with store.transaction(write=False) as tx:
        assert await tx.get_pools(["pool-1", "pool-room-2", "pool-room-3"]) == [
            one,
            two,
            make_pool("pool-room-3", "room-3"),  # untouched
        ]
    # A pool that is not there is not silently skipped.
    with pytest.raises(RuntimeError, match="vanished"):
        async with store.transaction(write=True) as tx:
            await tx.update_pools([one.with_changes(version=3), make_pool("pool-unknown")])
    async with store.transaction(write=False) as tx:
        assert await tx.get_pool("pool-1") == one


async def test_coupon_round_trips_with_its_pool_terms(store: SqlStore) -> None:
    await seed(store)
    coupon = make_coupon()
    async with store.transaction(write=True) as tx:
        await tx.insert_coupons([NewCoupon(coupon, "req-1", 1, 2)])
    async with store.transaction(write=False) as tx:
        assert await tx.get_coupon("coupon-1") == coupon
        assert await tx.get_coupon_by_code(coupon.code) == coupon
        assert await tx.count_grants("pool-1", "viewer-1") == 1
        assert await tx.count_grants("pool-1", "viewer-2") == 0


async def test_get_answers_finds_exactly_the_asked_keys_among_each_callers_history(
    store: SqlStore,
) -> None:
    history = [
        (IdempotencyKey(subject, f"r{i}", "Allocate", f"pool-{i}"), f"{subject}-answer-{i}")
        for subject, count in (("viewer-1", 40), ("viewer-2", 3))
        for i in range(count)
    ]
    async with store.transaction(write=True) as tx:
        await tx.put_answers(history, NOW)
    asked = [("viewer-1", "r7"), ("viewer-1", "r99"), ("viewer-2", "r2"), ("viewer-3", "r7")]
    async with store.transaction(write=False) as tx:
        found = await tx.get_answers(asked * 2)  # asking twice for a key is asking once
    assert found == {
        ("viewer-1", "r7"): StoredAnswer("Allocate", "pool-7", "viewer-1-answer-7"),
        ("viewer-2", "r2"): StoredAnswer("Allocate", "pool-2", "viewer-2-answer-2"),
    }


async def test_count_grants_many_counts_each_asked_pool_and_viewer_only(store: SqlStore) -> None:
    await seed(store, "room-1", "room-2")
    pool_1, pool_2 = make_pool(), make_pool("pool-room-2", "room-2")
    grants = [
        NewCoupon(
            make_coupon(f"c{n}", viewer, pool_id=pool.pool_id, room_id=pool.room_id),
            f"req-{n}",
            slot,
            2,
        )
        for n, (pool, viewer, slot) in enumerate(
            [
                (pool_1, "viewer-1", 1),
                (pool_1, "viewer-1", 2),
                (pool_2, "viewer-1", 1),
                (pool_1, "viewer-2", 1),
            ]
        )
    ]
    async with store.transaction(write=True) as tx:
        await tx.insert_coupons(grants)
    asked = [("pool-1", "viewer-1"), ("pool-room-2", "viewer-1"), ("pool-room-2", "viewer-2")]
    async with store.transaction(write=False) as tx:
        counts = await tx.count_grants_many(asked)
    assert counts == {("pool-1", "viewer-1"): 2, ("pool-room-2", "viewer-1"): 1}


async def test_keyed_lookups_probe_an_index_per_key_not_a_viewers_history(
    tmp_path: Path,
) -> None:
    """SQLite's plan: the keys drive the loop, each one an index search on both columns.
    (`viewer IN (...)` would read every earlier answer and coupon of each viewer.)
    PostgreSQL plans by its statistics; its results are checked by the tests above."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    await store.start()
    plans = {}
    for name, lookup in (("answers", sql_store._ANSWERS), ("grants", sql_store._GRANT_COUNTS)):
        statement, params = lookup.statement(False, [("a", "b"), ("c", "d")])
        rows = await raw_rows(store, "EXPLAIN QUERY PLAN " + statement.text, **params)
        plans[name] = [row[-1] for row in rows]
    assert plans["answers"][0].startswith("SCAN w VIRTUAL TABLE")
    assert "(subject=? AND request_id=?)" in plans["answers"][1]
    assert plans["grants"][0].startswith("SCAN w VIRTUAL TABLE")
    assert "(pool_id=? AND viewer_id=?)" in plans["grants"][1]
    await store.close()


# --- the outbox -------------------------------------------------------------------------


async def test_append_events_numbers_each_room_contiguously_from_one(store: SqlStore) -> None:
    await seed(store, "room-1", "room-2")
    pool = make_pool()
    async with store.transaction(write=True) as tx:
        last = await tx.append_events(
            "room-1",
            [EventDraft(EventKind.POOL_OPENED, pool), EventDraft(EventKind.STOCK_CHANGED, pool)],
            NOW,
        )
        assert last == 2
    async with store.transaction(write=True) as tx:
        drafts = [EventDraft(EventKind.STOCK_CHANGED, pool)] * 2
        drafts.append(EventDraft(EventKind.POOL_SOLD_OUT, pool))
        assert await tx.append_events("room-1", drafts, NOW) == 5
        other = make_pool("pool-room-2", "room-2")
        assert (
            await tx.append_events("room-2", [EventDraft(EventKind.POOL_OPENED, other)], NOW) == 1
        )
    async with store.transaction(write=False) as tx:
        events = await tx.events_after("room-1", 0, 100)
        assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
        assert [e.kind for e in events] == [
            EventKind.POOL_OPENED,
            EventKind.STOCK_CHANGED,
            EventKind.STOCK_CHANGED,
            EventKind.STOCK_CHANGED,
            EventKind.POOL_SOLD_OUT,
        ]
        assert all(e.room_id == "room-1" and e.pool == pool for e in events)
        assert all(e.event_time == NOW for e in events)
        assert [e.sequence for e in await tx.events_after("room-1", 3, 100)] == [4, 5]
        assert [e.sequence for e in await tx.events_after("room-2", 0, 100)] == [1]
        assert await tx.event_bounds("room-1") == EventBounds(first_retained=1, last=5)
        assert await tx.event_bounds("room-2") == EventBounds(first_retained=1, last=1)
        assert await tx.event_bounds("room-unknown") is None


def committed_last_seq(database_url: str, room_id: str) -> int:
    """The room's last committed event, read at once (blocking) through a new connection."""
    sql = "SELECT COALESCE(MAX(seq), 0) FROM room_events WHERE room_id = "
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with sqlite3.connect(url.database) as conn:
            return int(conn.execute(sql + "?", (room_id,)).fetchone()[0])

    async def read() -> int:
        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
        try:
            return int(await conn.fetchval(sql + "$1", room_id))
        finally:
            await conn.close()

    # The listener is synchronous: read on an event loop of another thread and wait for it.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, read()).result(timeout=10)


async def test_listeners_hear_the_last_sequence_only_after_commit(
    store: SqlStore, database_url: str
) -> None:
    await seed(store, "room-1", "room-2")
    heard: list[tuple[str, int, int]] = []
    handed: dict[str, list[RoomEvent]] = {}

    def listener(room_id: str, last_seq: int, lifecycle: bool, events: Sequence[RoomEvent]) -> None:
        # Read through an independent connection: only committed rows are visible there.
        heard.append((room_id, last_seq, committed_last_seq(database_url, room_id)))
        handed[room_id] = list(events)

    store.add_commit_listener(listener)
    pool = make_pool()
    async with store.transaction(write=True) as tx:
        await tx.append_events("room-1", [EventDraft(EventKind.STOCK_CHANGED, pool)], NOW)
        await tx.append_events("room-1", [EventDraft(EventKind.STOCK_CHANGED, pool)] * 2, NOW)
        other = make_pool("pool-room-2", "room-2")
        await tx.append_events("room-2", [EventDraft(EventKind.POOL_OPENED, other)], NOW)
        assert heard == []  # nothing is told before the commit
    # One call per room with the last sequence of the transaction, each already committed.
    assert sorted(heard) == [("room-1", 3, 3), ("room-2", 1, 1)]
    # With the room's events of the commit, as a read returns them (but for the chain,
    # which a commit does not read).
    async with store.transaction(write=False) as tx:
        for room_id in ("room-1", "room-2"):
            read = await tx.events_after(room_id, 0, 10)
            assert handed[room_id] == [replace(e, previous_lifecycle=0) for e in read]
    # On PostgreSQL the commit comes back through LISTEN/NOTIFY as well: not told twice.
    await asyncio.sleep(0.3)
    assert sorted(heard) == [("room-1", 3, 3), ("room-2", 1, 1)]


async def test_listeners_are_not_told_of_a_transaction_without_events(store: SqlStore) -> None:
    heard: list[tuple[str, int]] = []
    store.add_commit_listener(
        lambda room_id, seq, _lifecycle, _events: heard.append((room_id, seq))
    )
    await seed(store)
    async with store.transaction(write=True) as tx:
        await tx.append_events("room-1", [], NOW)
    assert heard == []


async def test_an_exception_in_a_write_transaction_rolls_back_everything(
    store: SqlStore,
) -> None:
    async with store.transaction(write=True) as tx:
        await tx.insert_room(make_room())
    heard: list[tuple[str, int]] = []
    store.add_commit_listener(
        lambda room_id, seq, _lifecycle, _events: heard.append((room_id, seq))
    )

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction(write=True) as tx:
            await tx.insert_pool(make_pool())
            await tx.append_events("room-1", [EventDraft(EventKind.POOL_OPENED, make_pool())], NOW)
            raise Boom

    assert heard == []
    async with store.transaction(write=False) as tx:
        assert await tx.get_pool("pool-1") is None
        assert await tx.events_after("room-1", 0, 100) == []
        assert await tx.event_bounds("room-1") == EventBounds(first_retained=1, last=0)
    # The sequence counter was rolled back too: the next event is number 1.
    async with store.transaction(write=True) as tx:
        await tx.insert_pool(make_pool())
        assert (
            await tx.append_events("room-1", [EventDraft(EventKind.POOL_OPENED, make_pool())], NOW)
            == 1
        )
    assert heard == [("room-1", 1)]


async def test_a_constraint_refusal_in_a_transaction_is_a_conflict_and_rolls_back(
    store: SqlStore,
) -> None:
    await seed(store)
    heard: list[tuple[str, int]] = []
    store.add_commit_listener(
        lambda room_id, seq, _lifecycle, _events: heard.append((room_id, seq))
    )
    with pytest.raises(Conflict):
        async with store.transaction(write=True) as tx:
            await tx.append_events(
                "room-1", [EventDraft(EventKind.STOCK_CHANGED, make_pool())], NOW
            )
            await tx.insert_coupons([NewCoupon(make_coupon("coupon-1"), "req-1", 1, 2)])
            # Same viewer, same slot of the same pool: the database refuses it.
            await tx.insert_coupons([NewCoupon(make_coupon("coupon-2"), "req-2", 1, 2)])
    assert heard == []
    async with store.transaction(write=False) as tx:
        assert await tx.get_coupon("coupon-1") is None
        assert await tx.events_after("room-1", 0, 100) == []


async def test_a_second_live_redemption_in_a_transaction_is_a_conflict(store: SqlStore) -> None:
    await seed(store)
    coupon = make_coupon()
    async with store.transaction(write=True) as tx:
        await tx.insert_coupons([NewCoupon(coupon, "req-1", 1, 2)])
        await tx.insert_redemption(Redemption("order-1", coupon, 1_000, 150, NOW), "fp-1")
    with pytest.raises(Conflict):
        async with store.transaction(write=True) as tx:
            await tx.insert_redemption(Redemption("order-2", coupon, 1_000, 150, NOW), "fp-2")
    async with store.transaction(write=True) as tx:
        [(first, _)] = await tx.get_redemptions("order-1")
        released = replace(
            first, state=RedemptionState.RELEASED, released_at=NOW + timedelta(minutes=1)
        )
        await tx.update_redemptions([released])
        await tx.insert_redemption(Redemption("order-2", coupon, 1_000, 150, NOW), "fp-2")
    async with store.transaction(write=False) as tx:
        assert [r for r, _ in await tx.get_redemptions("order-1")] == [released]
        [(second, fingerprint)] = await tx.get_redemptions("order-2")
        assert second.released_at is None and second.state is RedemptionState.CONFIRMED
        assert fingerprint == "fp-2"


async def test_an_order_holds_several_coupons_but_each_once(store: SqlStore) -> None:
    await seed(store)
    one, two = make_coupon("coupon-1"), make_coupon("coupon-2")
    async with store.transaction(write=True) as tx:
        await tx.insert_coupons([NewCoupon(one, "req-1", 1, 2), NewCoupon(two, "req-2", 2, 2)])
        await tx.insert_redemption(Redemption("order-1", one, 1_000, 150, NOW), "fp-1")
        await tx.insert_redemption(Redemption("order-1", two, 1_000, 100, NOW), "fp-2")
    with pytest.raises(Conflict):
        async with store.transaction(write=True) as tx:
            await tx.insert_redemption(Redemption("order-1", one, 1_000, 150, NOW), "fp-3")
    async with store.transaction(write=False) as tx:
        found = await tx.get_redemptions("order-1")
    assert [(r.coupon.coupon_id, fp) for r, fp in found] == [
        ("coupon-1", "fp-1"),
        ("coupon-2", "fp-2"),
    ]


# --- constraints enforced by the database itself ----------------------------------------


def refusal(store: SqlStore, *, sqlite: str, postgres: str) -> str:
    """The pattern of a unique-constraint refusal: SQLite names the columns, PostgreSQL the
    constraint (check constraints are named by both)."""
    return sqlite if store.engine.dialect.name == "sqlite" else postgres


async def test_database_refuses_negative_remaining_quantity(store: SqlStore) -> None:
    await seed(store)
    # Keep granted + remaining == total so only the sign of remaining is wrong.
    with pytest.raises(IntegrityError, match="ck_pools_remaining_nonneg"):
        await raw(
            store,
            "UPDATE pools SET remaining_quantity = -1, granted_quantity = total_quantity + 1 "
            "WHERE pool_id = 'pool-1'",
        )
    rows = await raw_rows(
        store, "SELECT remaining_quantity, granted_quantity FROM pools WHERE pool_id = 'pool-1'"
    )
    assert rows == [(10, 0)]


@pytest.mark.parametrize(
    "assignment",
    [
        "remaining_quantity = remaining_quantity - 1",
        "granted_quantity = granted_quantity + 1",
        "total_quantity = total_quantity + 1",
    ],
)
async def test_database_refuses_granted_plus_remaining_other_than_total(
    store: SqlStore, assignment: str
) -> None:
    await seed(store)
    with pytest.raises(IntegrityError, match="ck_pools_conservation"):
        await raw(store, f"UPDATE pools SET {assignment} WHERE pool_id = 'pool-1'")


async def test_database_accepts_a_grant_that_keeps_the_books_balanced(store: SqlStore) -> None:
    await seed(store)
    await raw(
        store,
        "UPDATE pools SET remaining_quantity = remaining_quantity - 1, "
        "granted_quantity = granted_quantity + 1 WHERE pool_id = 'pool-1'",
    )
    rows = await raw_rows(
        store, "SELECT remaining_quantity, granted_quantity FROM pools WHERE pool_id = 'pool-1'"
    )
    assert rows == [(9, 1)]


@pytest.mark.parametrize(("slot", "limit"), [(3, 2), (2, 1), (0, 2)])
async def test_database_refuses_a_coupon_slot_outside_the_per_viewer_limit(
    store: SqlStore, slot: int, limit: int
) -> None:
    await seed(store)
    with pytest.raises(IntegrityError, match="ck_coupons_slot"):
        await raw_coupon(store, "coupon-1", slot=slot, per_viewer_limit=limit)


async def test_database_accepts_slots_up_to_the_per_viewer_limit(store: SqlStore) -> None:
    await seed(store)
    await raw_coupon(store, "coupon-1", slot=1, per_viewer_limit=2)
    await raw_coupon(store, "coupon-2", slot=2, per_viewer_limit=2)
    await raw_coupon(store, "coupon-3", viewer_id="viewer-2", slot=1, per_viewer_limit=2)
    assert await raw_rows(store, "SELECT COUNT(*) FROM coupons") == [(3,)]


async def test_database_refuses_two_coupons_in_one_viewer_slot_of_a_pool(store: SqlStore) -> None:
    await seed(store)
    await raw_coupon(store, "coupon-1", slot=1)
    with pytest.raises(
        IntegrityError,
        match=refusal(
            store,
            sqlite=r"UNIQUE .* coupons\.pool_id, coupons\.viewer_id, coupons\.slot",
            postgres=r"unique constraint \"uq_coupons_viewer_slot\"",
        ),
    ):
        await raw_coupon(store, "coupon-2", slot=1)


async def test_database_refuses_one_request_id_twice_for_a_viewer(store: SqlStore) -> None:
    await seed(store)
    await raw_coupon(store, "coupon-1", request_id="req-1", slot=1)
    with pytest.raises(
        IntegrityError,
        match=refusal(
            store,
            sqlite=r"UNIQUE .* coupons\.viewer_id, coupons\.request_id",
            postgres=r"unique constraint \"uq_coupons_request\"",
        ),
    ):
        await raw_coupon(store, "coupon-2", request_id="req-1", slot=2)
    # Another viewer may use the same request id.
    await raw_coupon(store, "coupon-3", viewer_id="viewer-2", request_id="req-1", slot=1)


async def test_database_allows_one_live_redemption_per_coupon(store: SqlStore) -> None:
    await seed(store)
    await raw_coupon(store, "coupon-1")
    await raw(store, _INSERT_REDEMPTION, order_id="order-1", coupon_id="coupon-1")
    second_live = refusal(
        store,
        sqlite=r"UNIQUE .* redemptions\.coupon_id",
        postgres=r"unique constraint \"uq_redemptions_live_coupon\"",
    )
    with pytest.raises(IntegrityError, match=second_live):
        await raw(store, _INSERT_REDEMPTION, order_id="order-2", coupon_id="coupon-1")
    # Once the first order released the coupon it may be redeemed again.
    await raw(store, "UPDATE redemptions SET released_at_us = 5 WHERE order_id = 'order-1'")
    await raw(store, _INSERT_REDEMPTION, order_id="order-2", coupon_id="coupon-1")
    # ...but only once more.
    with pytest.raises(IntegrityError, match=second_live):
        await raw(store, _INSERT_REDEMPTION, order_id="order-3", coupon_id="coupon-1")


# --- pruning ----------------------------------------------------------------------------


async def test_prune_events_removes_old_events_and_moves_first_retained(store: SqlStore) -> None:
    await seed(store, "room-1", "room-2", "room-3")
    old, recent = NOW - timedelta(days=2), NOW
    pool = make_pool()
    async with store.transaction(write=True) as tx:
        await tx.append_events("room-1", [EventDraft(EventKind.STOCK_CHANGED, pool)] * 3, old)
        await tx.append_events("room-2", [EventDraft(EventKind.STOCK_CHANGED, pool)] * 2, old)
        await tx.append_events("room-3", [EventDraft(EventKind.STOCK_CHANGED, pool)] * 2, recent)
    async with store.transaction(write=True) as tx:
        await tx.append_events("room-1", [EventDraft(EventKind.STOCK_CHANGED, pool)] * 2, recent)

    removed = await store.prune_events(NOW - timedelta(days=1))

    assert removed == 3 + 2
    async with store.transaction(write=False) as tx:
        # room-1 keeps its two recent events, 4 and 5.
        assert [e.sequence for e in await tx.events_after("room-1", 0, 100)] == [4, 5]
        assert await tx.event_bounds("room-1") == EventBounds(first_retained=4, last=5)
        # room-2 lost everything: the next event it will ever have is the first retained.
        assert await tx.events_after("room-2", 0, 100) == []
        assert await tx.event_bounds("room-2") == EventBounds(first_retained=3, last=2)
        # room-3 had only recent events.
        assert await tx.event_bounds("room-3") == EventBounds(first_retained=1, last=2)


async def test_prune_events_with_nothing_old_removes_nothing(store: SqlStore) -> None:
    await seed(store)
    async with store.transaction(write=True) as tx:
        await tx.append_events("room-1", [EventDraft(EventKind.STOCK_CHANGED, make_pool())], NOW)
    assert await store.prune_events(NOW - timedelta(seconds=1)) == 0
    async with store.transaction(write=False) as tx:
        assert await tx.event_bounds("room-1") == EventBounds(first_retained=1, last=1)
        assert len(await tx.events_after("room-1", 0, 100)) == 1


async def test_append_events_many_numbers_several_rooms_in_one_go(store: SqlStore) -> None:
    await seed(store, "room-1", "room-2", "room-3")
    one, two = make_pool(), make_pool("pool-room-2", "room-2")
    async with store.transaction(write=True) as tx:
        await tx.append_events("room-1", [EventDraft(EventKind.POOL_OPENED, one)], NOW)
        await tx.append_events_many(
            {
                "room-1": [EventDraft(EventKind.STOCK_CHANGED, one)] * 2,
                "room-2": [EventDraft(EventKind.POOL_OPENED, two)],
                "room-3": [],
            },
            lambda: NOW,
        )
    async with store.transaction(write=False) as tx:
        assert [e.sequence for e in await tx.events_after("room-1", 0, 10)] == [1, 2, 3]
        assert [e.sequence for e in await tx.events_after("room-2", 0, 10)] == [1]
        assert await tx.event_bounds("room-3") == EventBounds(first_retained=1, last=0)


async def test_append_events_many_stamps_the_events_after_numbering_them(store: SqlStore) -> None:
    """The events' time is read after the rooms' counters moved, just before the insert: the
    stamp is as close to the commit as the statements allow (under a fan-out each statement's
    answer can wait long in the event loop's queue)."""
    await seed(store, "room-1", "room-2")
    statements: list[str] = []
    stamped_at: list[int] = []
    later = NOW + timedelta(seconds=7)

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()[:3]))

    def clock() -> datetime:
        stamped_at.append(len(statements))
        return later

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with store.transaction(write=True) as tx:
            await tx.append_events_many(
                {
                    "room-1": [EventDraft(EventKind.POOL_OPENED, make_pool())],
                    "room-2": [EventDraft(EventKind.POOL_OPENED, make_pool("p2", "room-2"))],
                },
                clock,
            )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(stamped_at) == 1, "the clock is read once per call"
    before, after = statements[: stamped_at[0]], statements[stamped_at[0] :]
    assert any(s.startswith("UPDATE rooms") for s in before), statements
    assert after[0].startswith("INSERT INTO room_events"), statements
    async with store.transaction(write=False) as tx:
        for room_id in ("room-1", "room-2"):
            assert [e.event_time for e in await tx.events_after(room_id, 0, 10)] == [later]


async def test_append_events_many_refuses_a_counter_moved_under_it(store: SqlStore) -> None:
    await seed(store, "room-1")
    pool = make_pool()
    with pytest.raises(Conflict):
        async with store.transaction(write=True) as tx:
            # Another writer's numbering (simulated inside the transaction) moves the counter
            # between our read of it and our conditional update.
            conn = tx._conn

            class Racing:
                """The transaction's connection, with another writer after each rooms read."""

                async def execute(self, stmt: Any, *args: Any, **kwargs: Any) -> Any:
                    result = await conn.execute(stmt, *args, **kwargs)
                    if getattr(stmt, "is_select", False) and "rooms" in str(stmt):
                        await conn.execute(
                            text("UPDATE rooms SET last_event_seq = last_event_seq + 1")
                        )
                    return result

            tx._conn = Racing()  # type: ignore[assignment]
            drafts = {"room-1": [EventDraft(EventKind.POOL_OPENED, pool)]}
            await tx.append_events_many(drafts, lambda: NOW)
    async with store.transaction(write=False) as tx:
        assert await tx.events_after("room-1", 0, 10) == []


async def test_watch_sessions_are_stored_overwritten_and_pruned(store: SqlStore) -> None:
    one = WatchSession(
        "room-1", "v-1", NOW, NOW + timedelta(seconds=5), NOW + timedelta(seconds=25)
    )
    two = WatchSession("room-1", "v-2", NOW, NOW, NOW)
    async with store.transaction(write=True) as tx:
        await tx.put_watch_sessions([one, two])
    moved = replace(one, seen_at=NOW + timedelta(seconds=9))
    async with store.transaction(write=True) as tx:
        assert await tx.get_watch_sessions([("room-1", "v-1")], for_update=True) == {
            ("room-1", "v-1"): one
        }
        await tx.put_watch_sessions([moved])
    async with store.transaction(write=True) as tx:
        found = await tx.get_watch_sessions([("room-1", "v-1"), ("room-1", "v-2"), ("r", "x")])
        assert found == {("room-1", "v-1"): moved, ("room-1", "v-2"): two}
        assert await tx.prune_watch_sessions(NOW + timedelta(seconds=1)) == 1
        assert list(await tx.get_watch_sessions([("room-1", "v-2")])) == []
