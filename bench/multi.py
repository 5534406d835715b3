"""PostgreSQL mode (BENCH_DB=postgres): throw-away databases, and the `multi` scenario.

Both bench servers get a fresh database `lr_bench_<hex>` each, created on BENCH_PG_URL
(default postgresql://postgres@127.0.0.1:5432; CREATE/DROP DATABASE go to the URL's database,
else `postgres`), analysed before every round (see `analyze`) and dropped at the end. Two more
server processes run on the batched server's database for `multi`: the same load as `hot`
(distinct viewers on one pool of as many coupons, each retrying once with the same
request_id) spread evenly over the three processes, every retry sent to another process than
its first attempt. It runs right after `hot` in every round; `multi_vs_single` is its
throughput over that round's `hot`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench import gate
from bench.jobs import Grab
from bench.scenarios import ORDER, Bench, ScenarioRun, _summarise
from bench.server_process import ServerProcess

log = logging.getLogger(__name__)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"
PREFIX = "lr_bench_"
PROCESSES = 3
"""Server processes of `multi`: the batched server and two more on its database."""
POSTGRES_ORDER = (*ORDER[:2], "multi", *ORDER[2:])
"""The scenarios of a round in PostgreSQL mode: `multi` right after the `hot` it is compared
with."""


def postgres_mode(environ: Mapping[str, str] | None = None) -> bool:
    """Whether BENCH_DB asks for PostgreSQL (anything else: the embedded SQLite)."""
    env = os.environ if environ is None else environ
    return env.get("BENCH_DB", "sqlite").strip().lower() in ("postgres", "postgresql", "pg")


def _server_url(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("BENCH_PG_URL") or DEFAULT_PG


def _with(url: str, scheme: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def admin_dsn(environ: Mapping[str, str] | None = None) -> str:
    """Where CREATE/DROP DATABASE are sent (asyncpg DSN): the URL's database, else `postgres`."""
    url = _server_url(environ)
    return _with(url, "postgresql", urlsplit(url).path.strip("/") or "postgres")


def store_url(database: str, environ: Mapping[str, str] | None = None) -> str:
    """The server's `--database-url` (SQLAlchemy, asyncpg driver) for a bench database."""
    return _with(_server_url(environ), "postgresql+asyncpg", database)


class Databases:
    """Creates `lr_bench_<hex>` databases and drops them all at `drop_all()`."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new_url(self) -> str:
        name = PREFIX + secrets.token_hex(5)
        asyncio.run(self._run(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return store_url(name)

    def drop_all(self) -> list[str]:
        """Drop every database created (connections still open are terminated); the names of
        those that could not be dropped."""
        left: list[str] = []
        while self.names:
            name = self.names.pop()
            try:
                asyncio.run(self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("could not drop database %s: %s", name, exc)
                left.append(name)
        return left

    @staticmethod
    async def _run(statement: str) -> None:
        # asyncpg runs it outside a transaction block, as CREATE/DROP DATABASE need.
        conn = await asyncpg.connect(admin_dsn(), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def analyze(*urls: str) -> None:
    """ANALYZE the bench databases, between scenarios, as autovacuum's autoanalyze keeps a
    default PostgreSQL's statistics. Without statistics (a fresh database on a server running
    with autovacuum off) the planner takes the grab batch's `IN (...)` lookups for most of the
    table and scans it: every batch gets slower as the tables grow, round after round."""

    async def run_all() -> None:
        for url in urls:
            conn = await asyncpg.connect(url.replace("+asyncpg", "", 1), timeout=10)
            try:
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

    asyncio.run(run_all())


def extra_servers(work: Path, token_key: str, database_url: str) -> list[ServerProcess]:
    """The processes `multi` adds to the batched server, on its database (not started)."""
    return [
        ServerProcess(
            f"multi-{i}", work / f"multi-{i}", token_key, batching=True, database_url=database_url
        )
        for i in range(2, PROCESSES + 1)
    ]


def run(bench: Bench, servers: Sequence[ServerProcess], round_no: int) -> ScenarioRun:
    """`hot`'s load on one new pool, spread over `servers` (the first is the batched server)."""
    return grab(bench, servers, f"multi-r{round_no}", bench.sizes.hot_viewers)


def grab(bench: Bench, servers: Sequence[ServerProcess], label: str, viewers: int) -> ScenarioRun:
    """`viewers` distinct viewers grab one pool of as many coupons, each twice with the same
    request_id: the first call on one process, the retry on the next (round robin)."""
    pool_id = bench.batched_setup.pool(label, viewers)
    grabs = [Grab(f"{label}-v{i}", pool_id) for i in range(viewers)]
    targets = tuple(s.target for s in servers)
    n = bench.load.size
    jobs = [
        dataclasses.replace(
            bench._job("grab", bench.batched, grabs=tuple(grabs[i::n]), attempts=2),
            targets=targets[i % len(targets) :] + targets[: i % len(targets)],
        )
        for i in range(n)
    ]
    measured = bench.load.run(jobs, lambda: sum(s.cpu_seconds() for s in servers))
    result = _summarise("multi", measured)
    records = [g for r in measured.results for g in r.grabs]
    result.gate = gate.check_grabs(bench.batched.store, [pool_id], records)
    return result
