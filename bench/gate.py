"""Correctness gate: after a scenario, read what the server committed and check the invariants.

The store is the server's SQLite file, or its PostgreSQL URL (BENCH_DB=postgres): the same
tables, read with asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.jobs import GrabRecord

DECIDED = {
    "ALLOCATION_OUTCOME_GRANTED",
    "ALLOCATION_OUTCOME_SOLD_OUT",
    "ALLOCATION_OUTCOME_LIMIT_REACHED",
}
GRANTED = "ALLOCATION_OUTCOME_GRANTED"


@dataclass(kw_only=True)
class GateResult:
    """What the checks found; ok when nothing failed."""

    oversold: int = 0
    """Coupons beyond a pool's stock."""
    duplicate_grants: int = 0
    """Coupons beyond the per-viewer limit, or beyond one per request_id."""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: GateResult) -> None:
        self.oversold += other.oversold
        self.duplicate_grants += other.duplicate_grants
        self.failures.extend(other.failures)


def check_grabs(store: Path | str, pool_ids: list[str], grabs: Iterable[GrabRecord]) -> GateResult:
    """Check the pools against the store and against every answer the clients got.

    `grabs` are all taps ever made at these pools. Per pool, demand is the taps that got a
    decision (granted, sold out, limit reached); taps that got only errors (refused by
    admission, cancelled, ...) may or may not have been granted, so granted must lie between
    min(stock, decided) and min(stock, decided + undecided): exactly min(stock, demand) when
    every tap got a decision.
    """
    out = GateResult()
    by_pool: dict[str, list[GrabRecord]] = {p: [] for p in pool_ids}
    for grab in grabs:
        by_pool.setdefault(grab.pool_id, []).append(grab)
    pools, rows = _read_store(store, pool_ids)
    for pool_id in pool_ids:
        if pool_id not in pools:
            out.failures.append(f"pool {pool_id} is not in the store")
    coupons_per_pool = Counter(r[1] for r in rows)
    for pool_id, (total, remaining, granted, limit) in pools.items():
        n_rows = coupons_per_pool[pool_id]
        out.oversold += max(0, n_rows - total, granted - total)
        if granted + remaining != total:
            out.failures.append(f"{pool_id}: granted {granted} + remaining {remaining} != {total}")
        if n_rows != granted:
            out.failures.append(f"{pool_id}: {n_rows} coupon rows but granted {granted}")
        taps = by_pool.get(pool_id, [])
        decided = sum(1 for t in taps if any(o in DECIDED for o in t.outcomes))
        undecided = len(taps) - decided
        low, high = min(total, decided), min(total, decided + undecided)
        if not low <= granted <= high:
            want = str(low) if low == high else f"{low}..{high}"
            out.failures.append(
                f"{pool_id}: granted {granted}, expected min(stock {total}, demand) = {want}"
            )
        per_viewer = Counter(r[2] for r in rows if r[1] == pool_id)
        out.duplicate_grants += sum(max(0, n - limit) for n in per_viewer.values())
    per_request = Counter((r[2], r[3]) for r in rows)
    out.duplicate_grants += sum(n - 1 for n in per_request.values() if n > 1)
    if out.oversold:
        out.failures.append(f"oversold: {out.oversold} coupons beyond stock")
    if out.duplicate_grants:
        out.failures.append(f"duplicate grants: {out.duplicate_grants} over the limit")
    codes = Counter(r[0] for r in rows)
    if dup := sum(n - 1 for n in codes.values() if n > 1):
        out.failures.append(f"{dup} coupon codes not unique")
    _check_answers(rows, by_pool, out)
    return out


_POOLS = (
    "SELECT pool_id, total_quantity, remaining_quantity, granted_quantity, per_viewer_limit "
    "FROM pools WHERE pool_id IN ({marks})"
)
_COUPONS = "SELECT code, pool_id, viewer_id, request_id FROM coupons WHERE pool_id IN ({marks})"
Rows = list[tuple[str, str, str, str]]


def _read_store(
    store: Path | str, pool_ids: list[str]
) -> tuple[dict[str, tuple[int, int, int, int]], Rows]:
    """The pools and their coupons, from the SQLite file or the PostgreSQL URL."""
    if isinstance(store, str):
        return asyncio.run(_read_postgres(store, pool_ids))
    # Read-only; a WAL reader does not block the live server.
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        marks = ",".join("?" * len(pool_ids))
        pools = {r[0]: tuple(r[1:]) for r in db.execute(_POOLS.format(marks=marks), pool_ids)}
        rows = db.execute(_COUPONS.format(marks=marks), pool_ids).fetchall()
    return pools, rows


async def _read_postgres(
    url: str, pool_ids: list[str]
) -> tuple[dict[str, tuple[int, int, int, int]], Rows]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        marks = ",".join(f"${i + 1}" for i in range(len(pool_ids)))
        pools = {
            r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in await conn.fetch(_POOLS.format(marks=marks), *pool_ids)
        }
        rows = [tuple(r) for r in await conn.fetch(_COUPONS.format(marks=marks), *pool_ids)]
    finally:
        await conn.close()
    return pools, rows


def _check_answers(
    rows: list[tuple[str, str, str, str]], by_pool: dict[str, list[GrabRecord]], out: GateResult
) -> None:
    """Every grant a client saw is a row of its own, and a retry got the same answer."""
    recorded = {r[0]: (r[1], r[2], r[3]) for r in rows}
    unrecorded = mismatched = 0
    for taps in by_pool.values():
        for tap in taps:
            granted = {c for c, o in zip(tap.codes, tap.outcomes, strict=True) if o == GRANTED}
            answered = {o for o in tap.outcomes if o}
            if len(granted) > 1 or (granted and answered != {GRANTED}):
                mismatched += 1
            for code in granted:
                if recorded.get(code) != (tap.pool_id, tap.viewer_id, tap.request_id):
                    unrecorded += 1
    if unrecorded:
        out.failures.append(f"{unrecorded} grants returned to clients are not in the store")
    if mismatched:
        out.failures.append(f"{mismatched} retries got another answer than the first call")


def check_noop(statuses: dict[str, int], outcomes: dict[str, int], calls: int) -> GateResult:
    """The health checks all answered OK with SERVING."""
    out = GateResult()
    if statuses.get("OK", 0) != calls or outcomes.get("SERVING", 0) != calls:
        out.failures.append(f"noop: not every Check answered SERVING: {statuses} {outcomes}")
    return out
