"""The Store implemented with SQLAlchemy 2 async Core, on SQLite (aiosqlite) or PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
    values,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Select

from server.domain.eligibility import WatchSession
from server.domain.errors import Conflict, Unavailable
from server.domain.models import (
    Coupon,
    EventDraft,
    EventKind,
    Pool,
    Redemption,
    Room,
    RoomEvent,
)
from server.store import codec, pg_notify
from server.store.interface import (
    CommitListener,
    EventBounds,
    IdempotencyKey,
    NewCoupon,
    StoredAnswer,
)
from server.store.migrate import upgrade_to_head
from server.store.schema import (
    coupons,
    idempotency,
    pools,
    redemptions,
    room_events,
    rooms,
    watch_sessions,
)

log = logging.getLogger(__name__)

_COUPON_COLUMNS = (
    coupons.c.coupon_id,
    coupons.c.code,
    coupons.c.pool_id,
    coupons.c.room_id,
    coupons.c.viewer_id,
    coupons.c.valid_from_us,
    coupons.c.valid_until_us,
    coupons.c.redeemed_order_id,
    coupons.c.lock_expires_at_us,
    coupons.c.release_count,
    coupons.c.grant_seq,
    pools.c.terms,
    pools.c.target,
    pools.c.currency_code,
    pools.c.stackable,
)


_CHUNK = 400  # bound on the parameters of one IN (...) list
_PG_MAX_PARAMETERS = 30_000  # below PostgreSQL's 32,767 bind parameters per statement


def _chunks(items: list[Any], size: int = _CHUNK) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


_PAIR_CHUNK = 2_000  # keys per statement (they travel as one parameter)


class _PairLookup:
    """Rows of a table matching any of many (a, b) key pairs, one index probe per pair.

    The pairs travel as one parameter (a JSON array on SQLite, two arrays on PostgreSQL),
    so the statement text is the same for every call. Neither `a IN (...)` on the first
    key column (it reads every row of each `a`: a viewer's whole history) nor a row-value
    IN (SQLite scanned the table) scales with the table.
    """

    def __init__(
        self, columns: tuple[str, ...], table: Table, match: tuple[str, str], tail: str = ""
    ) -> None:
        a, b = (table.c[name].name for name in match)  # KeyError on a name it does not have
        picked = ", ".join(name if "(" in name else f"t.{table.c[name].name}" for name in columns)
        table_name = table.name
        # CROSS JOIN: SQLite keeps the pairs as the outer loop and probes the table's index.
        self._sqlite = text(
            f"SELECT {picked} FROM json_each(:pairs) AS w CROSS JOIN {table_name} AS t "
            f"WHERE t.{a} = json_extract(w.value, '$[0]') "
            f"AND t.{b} = json_extract(w.value, '$[1]') {tail}"
        )
        self._postgres = text(
            f"SELECT {picked} FROM unnest(CAST(:a AS text[]), CAST(:b AS text[])) AS w(a, b) "
            f"JOIN {table_name} AS t ON t.{a} = w.a AND t.{b} = w.b {tail}"
        )

    def statement(self, postgres: bool, pairs: Sequence[tuple[str, str]]) -> tuple[Any, Any]:
        if postgres:
            return self._postgres, {"a": [p[0] for p in pairs], "b": [p[1] for p in pairs]}
        return self._sqlite, {"pairs": json.dumps(pairs)}


_ANSWERS = _PairLookup(
    ("subject", "request_id", "method", "fingerprint", "result"),
    idempotency,
    ("subject", "request_id"),
)
_GRANT_COUNTS = _PairLookup(
    ("pool_id", "viewer_id", "count(*)"),
    coupons,
    ("pool_id", "viewer_id"),
    "GROUP BY t.pool_id, t.viewer_id",
)


def _update_from_values(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    match: Mapping[str, str],
    assign: Mapping[str, str],
) -> Any:
    """`UPDATE table SET ... FROM (VALUES ...) AS v WHERE ... RETURNING` (PostgreSQL).

    One statement updates several rows, each with its own values, and says which rows it
    updated: asyncpg's executemany reports no row counts. `match` and `assign` map the
    table's columns to keys of `rows`.
    """
    names = [*match.values(), *assign.values()]
    typed = {key: table.c[col].type for col, key in (*match.items(), *assign.items())}
    given = values(*(column(n, typed[n]) for n in names), name="v").data(
        [tuple(row[n] for n in names) for row in rows]
    )

    def value(key: str) -> Any:
        # A None is rendered as a bare NULL, which PostgreSQL types as text in VALUES.
        return cast(given.c[key], typed[key])

    first = next(iter(match))
    return (
        update(table)
        .where(*(table.c[col] == value(key) for col, key in match.items()))
        .values({col: value(key) for col, key in assign.items()})
        .returning(table.c[first])
    )


def _coupon_from_row(r: Any) -> Coupon:
    return codec.coupon_from_dict(r)


def _room_from_row(r: Mapping[str, Any]) -> Room:
    featured, shops = codec.catalogue_from_json(r["catalogue"])
    return Room(
        room_id=r["room_id"],
        streamer_id=r["streamer_id"],
        currency_code=r["currency_code"],
        featured_goods=featured,
        linked_shops=shops,
        created_at=codec.from_us(r["created_at_us"]),
    )


class SqlTransaction:
    """One unit of work on one connection; see interface.Transaction.

    On PostgreSQL a write transaction (READ COMMITTED) locks the rows it reads to change:
    `FOR NO KEY UPDATE`, which still lets other transactions insert rows referencing them
    (foreign keys take KEY SHARE locks). Rows are locked in key order, pools before rooms,
    so concurrent writers queue instead of deadlocking. Read transactions lock nothing.
    SQLite has a single writer and needs no row locks.
    """

    def __init__(self, conn: AsyncConnection, *, postgres: bool, write: bool = True) -> None:
        self._conn = conn
        self._postgres = postgres
        self._lock_rows = postgres and write
        # Rooms whose events this transaction appended, with the last sequence: published
        # to listeners only once the commit succeeded.
        self.appended: dict[str, int] = {}
        self.appended_events: dict[str, list[RoomEvent]] = {}
        """Each room's events of this transaction, for the commit listeners."""
        self.lifecycle_rooms: set[str] = set()

    async def _one(self, stmt: Any) -> Any:
        row = (await self._conn.execute(stmt)).mappings().first()
        return row

    def _locked(self, stmt: Select[Any], **options: Any) -> Select[Any]:
        """`stmt` locking the rows it reads, where the database needs that (see the class)."""
        if not self._lock_rows:
            return stmt
        return stmt.with_for_update(key_share=True, **options)

    async def get_answer(self, subject: str, request_id: str) -> StoredAnswer | None:
        if self._lock_rows:
            # A unit of work replaying its request_id first waits for any other one with
            # the same (subject, request_id) to end, and only then reads (a new snapshot in
            # READ COMMITTED): so it replays that one's answer instead of doing the work a
            # second time. SQLite's single writer gives the same order.
            await self._conn.execute(
                text("SELECT pg_advisory_xact_lock(:space, :key)"),
                {"space": _ANSWER_LOCK_SPACE, "key": _lock_key(subject, request_id)},
            )
        r = await self._one(
            select(idempotency.c.method, idempotency.c.fingerprint, idempotency.c.result).where(
                idempotency.c.subject == subject, idempotency.c.request_id == request_id
            )
        )
        return None if r is None else StoredAnswer(r["method"], r["fingerprint"], r["result"])

    async def put_answers(
        self, answers: Sequence[tuple[IdempotencyKey, str]], now: datetime
    ) -> None:
        if not answers:
            return
        at = codec.to_us(now)
        await self._conn.execute(
            insert(idempotency),
            [
                {
                    "subject": key.subject,
                    "request_id": key.request_id,
                    "method": key.method,
                    "fingerprint": key.fingerprint,
                    "result": result,
                    "created_at_us": at,
                }
                for key, result in answers
            ],
        )

    async def get_answers(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredAnswer]:
        # One primary-key probe per key: a viewer's earlier answers are not read, however
        # many there are (see _PairLookup).
        found: dict[tuple[str, str], StoredAnswer] = {}
        for chunk in _chunks(sorted(set(keys)), _PAIR_CHUNK):
            rows = await self._conn.execute(*_ANSWERS.statement(self._postgres, chunk))
            for subject, request_id, method, fingerprint, result in rows:
                found[(subject, request_id)] = StoredAnswer(method, fingerprint, result)
        return found

    async def get_room(self, room_id: str) -> Room | None:
        r = await self._one(select(rooms).where(rooms.c.room_id == room_id))
        return None if r is None else _room_from_row(r)

    async def insert_room(self, room: Room) -> None:
        await self._conn.execute(
            insert(rooms).values(
                room_id=room.room_id,
                streamer_id=room.streamer_id,
                currency_code=room.currency_code,
                catalogue=codec.catalogue_to_json(room.featured_goods, room.linked_shops),
                created_at_us=codec.to_us(room.created_at),
                last_event_seq=0,
                first_retained_seq=1,
            )
        )

    async def get_pool(self, pool_id: str, *, for_update: bool = False) -> Pool | None:
        stmt = select(pools).where(pools.c.pool_id == pool_id)
        if for_update:
            stmt = self._locked(stmt)
        r = await self._one(stmt)
        return None if r is None else codec.pool_from_row(r)

    async def get_pools(self, pool_ids: Sequence[str], *, for_update: bool = False) -> list[Pool]:
        stmt = select(pools).where(pools.c.pool_id.in_(sorted(pool_ids))).order_by(pools.c.pool_id)
        if for_update:
            stmt = self._locked(stmt)
        rows = (await self._conn.execute(stmt)).mappings().all()
        return [codec.pool_from_row(r) for r in rows]

    async def insert_pool(self, pool: Pool) -> None:
        await self._conn.execute(insert(pools).values(codec.pool_to_row(pool)))

    async def update_pool(self, pool: Pool) -> None:
        await self.update_pools([pool])

    async def update_pools(self, changed: Sequence[Pool]) -> None:
        if not changed:
            return
        rows = []
        for pool in changed:
            row = codec.pool_to_row(pool)
            row["key_pool_id"] = row.pop("pool_id")
            rows.append(row)
        columns = [n for n in rows[0] if n != "key_pool_id"]
        if self._postgres:
            updated = 0
            for chunk in _chunks(rows, _PG_MAX_PARAMETERS // len(rows[0])):
                stmt = _update_from_values(
                    pools, chunk, match={"pool_id": "key_pool_id"}, assign={n: n for n in columns}
                )
                updated += len((await self._conn.execute(stmt)).all())
        else:
            stmt = (
                update(pools)
                .where(pools.c.pool_id == bindparam("key_pool_id"))
                .values({n: bindparam(n) for n in columns})
            )
            updated = (await self._conn.execute(stmt, rows)).rowcount
        if updated != len(rows):
            raise RuntimeError("a pool vanished during its update")

    async def live_pools(self, room_id: str) -> list[Pool]:
        rows = (
            (
                await self._conn.execute(
                    select(pools)
                    .where(pools.c.room_id == room_id, pools.c.closed_at_us.is_(None))
                    .order_by(pools.c.claim_start_us, pools.c.pool_id)
                )
            )
            .mappings()
            .all()
        )
        return [codec.pool_from_row(r) for r in rows]

    async def pools_due(self, now: datetime) -> list[Pool]:
        at = codec.to_us(now)
        stmt = (
            select(pools)
            .where(
                or_(
                    and_(pools.c.announced_state == "scheduled", pools.c.claim_start_us <= at),
                    and_(
                        pools.c.announced_state.in_(("open", "sold_out")),
                        pools.c.claim_end_us.is_not(None),
                        pools.c.claim_end_us <= at,
                    ),
                )
            )
            .order_by(pools.c.pool_id)
        )
        # Another process's ticker may hold some of them: it announces those.
        stmt = self._locked(stmt, skip_locked=True)
        rows = (await self._conn.execute(stmt)).mappings().all()
        return [codec.pool_from_row(r) for r in rows]

    async def next_due(self) -> datetime | None:
        starts = (
            select(func.min(pools.c.claim_start_us))
            .where(pools.c.announced_state == "scheduled")
            .scalar_subquery()
        )
        ends = (
            select(func.min(pools.c.claim_end_us))
            .where(pools.c.announced_state.in_(("open", "sold_out")))
            .scalar_subquery()
        )
        r = (await self._conn.execute(select(starts, ends))).first()
        candidates = [v for v in (r[0], r[1]) if v is not None] if r else []
        return codec.from_us(min(candidates)) if candidates else None

    async def count_grants(self, pool_id: str, viewer_id: str) -> int:
        r = await self._conn.execute(
            select(func.count())
            .select_from(coupons)
            .where(coupons.c.pool_id == pool_id, coupons.c.viewer_id == viewer_id)
        )
        return int(r.scalar_one())

    async def insert_coupons(self, grants: Sequence[NewCoupon]) -> None:
        if not grants:
            return
        await self._conn.execute(
            insert(coupons),
            [
                {
                    "coupon_id": g.coupon.coupon_id,
                    "code": g.coupon.code,
                    "pool_id": g.coupon.pool_id,
                    "room_id": g.coupon.room_id,
                    "viewer_id": g.coupon.viewer_id,
                    "request_id": g.request_id,
                    "slot": g.slot,
                    "per_viewer_limit": g.per_viewer_limit,
                    "valid_from_us": codec.to_us(g.coupon.valid_from),
                    "valid_until_us": codec.to_us(g.coupon.valid_until),
                    "redeemed_order_id": g.coupon.redeemed_order_id,
                    "lock_expires_at_us": codec.opt_us(g.coupon.lock_expires_at),
                    "release_count": g.coupon.release_count,
                    "grant_seq": g.coupon.grant_sequence,
                }
                for g in grants
            ],
        )

    async def count_grants_many(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        # Probes the (pool, viewer, slot) index per pair: a viewer's coupons of other pools
        # are not read, however many there are.
        found: dict[tuple[str, str], int] = {}
        for chunk in _chunks(sorted(set(pairs)), _PAIR_CHUNK):
            rows = await self._conn.execute(*_GRANT_COUNTS.statement(self._postgres, chunk))
            for pool_id, viewer_id, count in rows:
                found[(pool_id, viewer_id)] = count
        return found

    async def granted_keys(self, pool_id: str) -> list[tuple[str, str]]:
        rows = await self._conn.execute(
            select(coupons.c.viewer_id, coupons.c.request_id).where(coupons.c.pool_id == pool_id)
        )
        return [(v, r) for v, r in rows]

    def _coupon_query(self) -> Any:
        return select(*_COUPON_COLUMNS).select_from(
            coupons.join(pools, coupons.c.pool_id == pools.c.pool_id)
        )

    async def get_coupon(self, coupon_id: str) -> Coupon | None:
        r = await self._one(self._coupon_query().where(coupons.c.coupon_id == coupon_id))
        return None if r is None else _coupon_from_row(r)

    async def get_coupon_by_code(self, code: str, *, for_update: bool = True) -> Coupon | None:
        if "\x00" in code:
            # No code holds NUL, and PostgreSQL refuses it even as a value to compare.
            return None
        stmt = self._coupon_query().where(coupons.c.code == code)
        if for_update:
            stmt = self._locked(stmt, of=coupons)
        r = await self._one(stmt)
        return None if r is None else _coupon_from_row(r)

    async def list_coupons(
        self, viewer_id: str, room_id: str, before: tuple[int, str] | None, limit: int
    ) -> list[Coupon]:
        stmt = self._coupon_query().where(coupons.c.viewer_id == viewer_id)
        if room_id:
            stmt = stmt.where(coupons.c.room_id == room_id)
        if before is not None:
            at, coupon_id = before
            stmt = stmt.where(
                or_(
                    coupons.c.valid_from_us < at,
                    and_(coupons.c.valid_from_us == at, coupons.c.coupon_id < coupon_id),
                )
            )
        stmt = stmt.order_by(coupons.c.valid_from_us.desc(), coupons.c.coupon_id.desc())
        rows = (await self._conn.execute(stmt.limit(limit))).mappings().all()
        return [_coupon_from_row(r) for r in rows]

    async def update_coupon_holds(self, changed: Sequence[Coupon]) -> None:
        for c in changed:
            await self._conn.execute(
                update(coupons)
                .where(coupons.c.coupon_id == c.coupon_id)
                .values(
                    redeemed_order_id=c.redeemed_order_id,
                    lock_expires_at_us=codec.opt_us(c.lock_expires_at),
                    release_count=c.release_count,
                )
            )

    async def lock_order(self, order_id: str) -> None:
        # Units of work on one order queue here, so the stacking check of one lock sees
        # every other lock of the order. SQLite's single writer gives the same order.
        await self._advisory(_ORDER_LOCK_SPACE, "order", order_id)

    async def lock_pins(self, room_id: str) -> None:
        await self._advisory(_PIN_LOCK_SPACE, "pins", room_id)

    async def _advisory(self, space: int, kind: str, name: str) -> None:
        """A transaction-scoped advisory lock on PostgreSQL (write transactions only)."""
        if self._lock_rows:
            await self._conn.execute(
                text("SELECT pg_advisory_xact_lock(:space, :key)"),
                {"space": space, "key": _lock_key(kind, name)},
            )

    async def get_redemptions(self, order_id: str) -> list[tuple[Redemption, str]]:
        rows = (
            (
                await self._conn.execute(
                    select(redemptions)
                    .where(redemptions.c.order_id == order_id)
                    .order_by(redemptions.c.redeemed_at_us, redemptions.c.coupon_id)
                )
            )
            .mappings()
            .all()
        )
        out: list[tuple[Redemption, str]] = []
        for r in rows:
            coupon = await self.get_coupon(r["coupon_id"])
            assert coupon is not None, "a redemption's coupon is held by a foreign key"
            out.append((codec.redemption_from_row(r, coupon), r["fingerprint"]))
        return out

    async def insert_redemption(self, redemption: Redemption, fingerprint: str) -> None:
        row = codec.redemption_to_row(redemption)
        await self._conn.execute(insert(redemptions).values(fingerprint=fingerprint, **row))

    async def update_redemptions(self, changed: Sequence[Redemption]) -> None:
        for r in changed:
            row = codec.redemption_to_row(r)
            await self._conn.execute(
                update(redemptions)
                .where(
                    redemptions.c.order_id == row.pop("order_id"),
                    redemptions.c.coupon_id == row.pop("coupon_id"),
                )
                .values(**row)
            )

    async def get_watch_sessions(
        self, keys: Sequence[tuple[str, str]], *, for_update: bool = False
    ) -> dict[tuple[str, str], WatchSession]:
        by_room: dict[str, list[str]] = {}
        for room_id, viewer_id in sorted(set(keys)):
            by_room.setdefault(room_id, []).append(viewer_id)
        found: dict[tuple[str, str], WatchSession] = {}
        w = watch_sessions.c
        for room_id, viewers in by_room.items():
            for chunk in _chunks(viewers):
                stmt = select(watch_sessions).where(w.room_id == room_id, w.viewer_id.in_(chunk))
                if for_update:
                    stmt = self._locked(stmt.order_by(w.viewer_id))
                for r in (await self._conn.execute(stmt)).mappings():
                    found[(r["room_id"], r["viewer_id"])] = WatchSession(
                        r["room_id"],
                        r["viewer_id"],
                        codec.from_us(r["started_at_us"]),
                        codec.from_us(r["seen_at_us"]),
                        codec.from_us(r["live_until_us"]),
                    )
        return found

    async def put_watch_sessions(self, sessions: Sequence[WatchSession]) -> None:
        if not sessions:
            return
        rows = [
            {
                "room_id": x.room_id,
                "viewer_id": x.viewer_id,
                "started_at_us": codec.to_us(x.started_at),
                "seen_at_us": codec.to_us(x.seen_at),
                "live_until_us": codec.to_us(x.live_until),
            }
            for x in sessions
        ]
        # Delete then insert: the same statements on both backends (the caller holds the
        # rows locked, or is SQLite's single writer).
        w = watch_sessions.c
        by_room: dict[str, list[str]] = {}
        for x in sessions:
            by_room.setdefault(x.room_id, []).append(x.viewer_id)
        for room_id, viewers in by_room.items():
            for chunk in _chunks(viewers):
                await self._conn.execute(
                    delete(watch_sessions).where(w.room_id == room_id, w.viewer_id.in_(chunk))
                )
        await self._conn.execute(insert(watch_sessions), rows)

    async def prune_watch_sessions(self, older_than: datetime) -> int:
        at = codec.to_us(older_than)
        w = watch_sessions.c
        result = await self._conn.execute(
            delete(watch_sessions).where(w.seen_at_us < at, w.live_until_us < at)
        )
        return int(result.rowcount or 0)

    async def pool_stats(self, pool_id: str, now: datetime) -> dict[str, int]:
        at = codec.to_us(now)
        c = coupons.c
        on_order = c.redeemed_order_id.is_not(None)
        lock_holds = or_(c.lock_expires_at_us.is_(None), c.lock_expires_at_us > at)
        state = case(
            (and_(on_order, c.lock_expires_at_us.is_(None)), "redeemed"),
            (and_(on_order, c.lock_expires_at_us > at), "locked"),
            (c.valid_until_us <= at, "expired"),
            # A lock that expired gave the coupon back, as a release does.
            (or_(c.release_count > 0, and_(on_order, ~lock_holds)), "released"),
            else_="held",
        )
        rows = await self._conn.execute(
            select(state.label("state"), func.count()).where(c.pool_id == pool_id).group_by(state)
        )
        return {name: int(count) for name, count in rows}

    async def list_grants(self, pool_id: str, after: int, limit: int) -> list[Coupon]:
        stmt = (
            self._coupon_query()
            .where(coupons.c.pool_id == pool_id, coupons.c.grant_seq > after)
            .order_by(coupons.c.grant_seq)
            .limit(limit)
        )
        rows = (await self._conn.execute(stmt)).mappings().all()
        return [_coupon_from_row(r) for r in rows]

    async def append_events(self, room_id: str, drafts: list[EventDraft], now: datetime) -> int:
        await self.append_events_many({room_id: drafts}, lambda: now)
        return self.appended.get(room_id, 0)

    async def append_events_many(
        self, drafts_by_room: Mapping[str, Sequence[EventDraft]], clock: Callable[[], datetime]
    ) -> None:
        """Number and insert the events of several rooms with three statements in all; their
        time is read from `clock` after they are numbered, just before the insert."""
        room_ids = sorted(r for r, drafts in drafts_by_room.items() if drafts)
        if not room_ids:
            return
        # The room rows' counters hand out sequence numbers. On PostgreSQL the rows are
        # locked (in room order), so concurrent writers to one room commit their events in
        # sequence order; SQLite has one writer. The conditional update is the backstop for
        # both.
        stmt = self._locked(
            select(rooms.c.room_id, rooms.c.last_event_seq)
            .where(rooms.c.room_id.in_(room_ids))
            .order_by(rooms.c.room_id)
        )
        current = {room_id: int(seq) for room_id, seq in await self._conn.execute(stmt)}
        moves: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for room_id in room_ids:
            drafts = drafts_by_room[room_id]
            old = current[room_id]
            moves.append({"key_room_id": room_id, "old_seq": old, "new_seq": old + len(drafts)})
            rows.extend(
                {
                    "room_id": room_id,
                    "seq": old + 1 + i,
                    "kind": d.kind.value,
                    "pool_id": d.pool.pool_id,
                    "payload": codec.pool_to_json(d.pool),
                }
                for i, d in enumerate(drafts)
            )
        if self._postgres:
            moved = 0
            for chunk in _chunks(moves, _PG_MAX_PARAMETERS // 3):
                stmt = _update_from_values(
                    rooms,
                    chunk,
                    match={"room_id": "key_room_id", "last_event_seq": "old_seq"},
                    assign={"last_event_seq": "new_seq"},
                )
                moved += len((await self._conn.execute(stmt)).all())
        else:
            moved = (
                await self._conn.execute(
                    update(rooms)
                    .where(
                        rooms.c.room_id == bindparam("key_room_id"),
                        rooms.c.last_event_seq == bindparam("old_seq"),
                    )
                    .values(last_event_seq=bindparam("new_seq")),
                    moves,
                )
            ).rowcount
        if moved != len(moves):
            raise Conflict(
                "a room's events were numbered concurrently; retry", reason="CONCURRENT_CHANGE"
            )
        # An event's time is when it was committed: stamped here, two round trips before the
        # commit returns, not before the numbering's two. Under a fan-out each round trip's
        # answer waits in the event loop's queue behind thousands of stream writes.
        at = codec.to_us(clock())
        for row in rows:
            row["created_at_us"] = at
        await self._conn.execute(insert(room_events), rows)
        for move in moves:
            self.appended[str(move["key_room_id"])] = int(move["new_seq"])
        event_time = codec.from_us(at)
        for row in rows:
            kind = EventKind(row["kind"])
            self.appended_events.setdefault(row["room_id"], []).append(
                # As `events_after` reads it back (the pool from its stored payload).
                RoomEvent(
                    row["room_id"],
                    row["seq"],
                    event_time,
                    kind,
                    codec.pool_from_json(row["payload"]),
                )
            )
        self.lifecycle_rooms.update(
            room_id
            for room_id in room_ids
            if any(d.kind is not EventKind.STOCK_CHANGED for d in drafts_by_room[room_id])
        )

    async def notify_commit(self) -> None:
        """PostgreSQL: tell every LISTENing process, once per room with its last sequence, what
        this transaction appended; delivered when, and only if, it commits."""
        notes = [
            pg_notify.payload(room_id, seq, room_id in self.lifecycle_rooms)
            for room_id, seq in sorted(self.appended.items())
        ]
        await self._conn.execute(
            text("SELECT pg_notify(:channel, note) FROM unnest(CAST(:notes AS text[])) note"),
            {"channel": pg_notify.CHANNEL, "notes": notes},
        )

    async def events_after(self, room_id: str, after: int, limit: int) -> list[RoomEvent]:
        rows = (
            (
                await self._conn.execute(
                    select(room_events)
                    .where(room_events.c.room_id == room_id, room_events.c.seq > after)
                    .order_by(room_events.c.seq)
                    .limit(limit)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return []
        # The chain that lets a client tell a coalesced stock change from a lost event:
        # each event names the room's lifecycle event before it.
        previous = await self._conn.scalar(
            select(func.max(room_events.c.seq)).where(
                room_events.c.room_id == room_id,
                room_events.c.seq <= after,
                room_events.c.kind != EventKind.STOCK_CHANGED.value,
            )
        )
        previous = int(previous or 0)
        events: list[RoomEvent] = []
        for r in rows:
            kind = EventKind(r["kind"])
            events.append(
                RoomEvent(
                    room_id=r["room_id"],
                    sequence=r["seq"],
                    event_time=codec.from_us(r["created_at_us"]),
                    kind=kind,
                    pool=codec.pool_from_json(r["payload"]),
                    previous_lifecycle=previous,
                )
            )
            if kind is not EventKind.STOCK_CHANGED:
                previous = r["seq"]
        return events

    async def event_bounds(self, room_id: str) -> EventBounds | None:
        r = await self._one(
            select(rooms.c.first_retained_seq, rooms.c.last_event_seq).where(
                rooms.c.room_id == room_id
            )
        )
        return None if r is None else EventBounds(r["first_retained_seq"], r["last_event_seq"])

    async def prune_events(self, older_than: datetime) -> int:
        """Delete events committed before `older_than` and move the rooms' first retained.

        Only rooms that had old events are touched, locked in room order on PostgreSQL like
        every writer locks them, so pruning neither deadlocks with nor stalls the others.
        """
        at = codec.to_us(older_than)
        old = room_events.c.created_at_us < at
        touched = await self._conn.execute(select(room_events.c.room_id).where(old).distinct())
        removed = 0
        for chunk in _chunks(sorted(touched.scalars())):
            await self._conn.execute(
                self._locked(
                    select(rooms.c.room_id)
                    .where(rooms.c.room_id.in_(chunk))
                    .order_by(rooms.c.room_id)
                )
            )
            result = await self._conn.execute(
                delete(room_events).where(room_events.c.room_id.in_(chunk), old)
            )
            removed += int(result.rowcount or 0)
            oldest = (
                select(func.min(room_events.c.seq))
                .where(room_events.c.room_id == rooms.c.room_id)
                .scalar_subquery()
            )
            await self._conn.execute(
                update(rooms)
                .where(rooms.c.room_id.in_(chunk))
                .values(first_retained_seq=func.coalesce(oldest, rooms.c.last_event_seq + 1))
            )
        return removed


class SqlStore:
    """Store over a SQLAlchemy async engine. See interface.Store."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> None:
        self.url = url
        self._postgres = url.startswith("postgresql")
        self._sqlite = url.startswith("sqlite")
        if self._sqlite:
            _ensure_sqlite_folder(url)
        self.engine: AsyncEngine = create_async_engine(url, echo=echo, pool_pre_ping=False)
        if self._sqlite:
            _configure_sqlite(self.engine, sqlite_synchronous)
        # SQLite has one writer at a time: queue writers here instead of on SQLITE_BUSY.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self._sqlite else None
        self._listeners: list[CommitListener] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self._announced: dict[str, int] = {}  # per room, the last sequence told to listeners
        self._notifications: pg_notify.NotificationListener | None = None

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            if self._postgres:
                # Processes starting at once on one database migrate one after the other
                # (the lock is held until this transaction ends).
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(upgrade_to_head)
        if self._postgres and self._notifications is None:  # started twice: one listener
            self._notifications = pg_notify.NotificationListener(
                pg_notify.libpq_dsn(self.url), self._heard, self._resync
            )
            await self._notifications.start()

    async def close(self) -> None:
        if self._notifications is not None:
            await self._notifications.close()
            self._notifications = None
        await self.engine.dispose()

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        self._resync_listeners.append(listener)

    def _heard(self, room_id: str, sequence: int, lifecycle: bool) -> None:
        self._announce(room_id, sequence, lifecycle, ())

    def _resync(self) -> None:
        for listener in self._resync_listeners:
            listener()

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[SqlTransaction]:
        if write and self._write_lock is not None:
            async with self._write_lock, self._begin(write) as tx:
                yield tx
        else:
            async with self._begin(write) as tx:
                yield tx

    @asynccontextmanager
    async def _begin(self, write: bool) -> AsyncIterator[SqlTransaction]:
        try:
            async with self._connect(write) as conn, conn.begin():
                tx = SqlTransaction(conn, postgres=self._postgres, write=write)
                yield tx
                if self._postgres and tx.appended:
                    await tx.notify_commit()
        except IntegrityError as exc:
            # A constraint refused the write: a concurrent change got there first. Nothing
            # was committed, so the caller may retry with the same request_id.
            log.warning("transaction refused by a constraint: %s", exc.orig)
            raise Conflict("a concurrent change won; retry", reason="CONCURRENT_CHANGE") from exc
        except DBAPIError as exc:
            unavailable = _as_unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        for room_id, seq in tx.appended.items():
            self._announce(
                room_id, seq, room_id in tx.lifecycle_rooms, tx.appended_events.get(room_id, ())
            )

    def _announce(
        self, room_id: str, sequence: int, lifecycle: bool, events: Sequence[RoomEvent]
    ) -> None:
        # On PostgreSQL a commit of this process is heard twice (directly, then through
        # LISTEN), and other processes' notifications may trail a newer local one: listeners
        # hear each room's sequences once, only growing.
        if sequence <= self._announced.get(room_id, 0):
            return
        self._announced[room_id] = sequence
        for listener in self._listeners:
            listener(room_id, sequence, lifecycle, events)

    @asynccontextmanager
    async def _connect(self, write: bool) -> AsyncIterator[AsyncConnection]:
        try:
            conn = await self.engine.connect()
        except (OSError, TimeoutError, sa_exc.TimeoutError) as exc:
            # asyncpg raises OSError (refused, unreachable) or TimeoutError when it cannot
            # connect, unwrapped; SQLAlchemy's pool raises its TimeoutError when every
            # connection stayed busy for pool_timeout. DBAPIErrors are mapped by _begin.
            log.error("database unavailable: %s", exc)
            raise Unavailable(
                "the database is unavailable; retry", reason="STORE_UNAVAILABLE"
            ) from exc
        try:
            if self._postgres and not write:
                # One snapshot for every read of the unit of work.
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn
        finally:
            await conn.close()

    async def prune_events(self, older_than: datetime) -> int:
        async with self.transaction(write=True) as tx:
            return await tx.prune_events(older_than)


_MIGRATION_LOCK_KEY = 0x6C69_7665_7265_73  # PostgreSQL advisory lock held while migrating
_ANSWER_LOCK_SPACE = 0x6C72_6964  # advisory locks (space, key) of request ids ("lrid")
_ORDER_LOCK_SPACE = 0x6C72_6F64  # advisory locks (space, key) of orders ("lrod")
_PIN_LOCK_SPACE = 0x6C72_706E  # advisory locks (space, key) of a room's pins ("lrpn")


def _lock_key(subject: str, request_id: str) -> int:
    """A request id's advisory lock key: a signed 32-bit hash (a collision only waits)."""
    digest = hashlib.blake2b(f"{subject}\n{request_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


# PostgreSQL SQLSTATEs of a transaction that lost to a concurrent one: it rolled back and
# the same unit of work, run again, can succeed. The store cannot rerun its caller's unit
# of work, so it reports them as Unavailable (retryable, with the same request_id).
_LOST_RACE = {"40001": "serialization failure", "40P01": "deadlock detected"}
# SQLSTATE classes that are bugs, not outages: data exceptions (a value the column cannot
# hold) and syntax or access errors. Retrying cannot help, so they are not Unavailable.
_BUG_CLASSES = ("22", "42")


def _as_unavailable(exc: DBAPIError) -> Unavailable | None:
    """The Unavailable a database error means, or None if it is a bug (raised as is)."""
    sqlstate = getattr(exc.orig, "sqlstate", None)  # PostgreSQL's; SQLite has none
    if sqlstate in _LOST_RACE:
        log.warning("transaction rolled back, %s: %s", _LOST_RACE[sqlstate], exc.orig)
        return Unavailable(
            "the transaction lost to a concurrent one; retry", reason="STORE_CONTENTION"
        )
    if sqlstate is not None and sqlstate[:2] in _BUG_CLASSES:
        return None
    log.error("database unavailable: %s", exc)
    return Unavailable("the database is unavailable; retry", reason="STORE_UNAVAILABLE")


def _ensure_sqlite_folder(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    """WAL, durable commits, foreign keys, and transactions that really begin at BEGIN."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so a read transaction is a real snapshot.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")
