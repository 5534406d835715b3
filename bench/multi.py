"""PostgreSQL mode (BENCH_DB=postgres): throw-away databases, and the `multi` scenario.

`multi`: three server processes over the batched server's database; one pool, distinct viewers
each grabbing twice with the same request_id, the load processes' slices sent to different
server processes. Compared, round by round, with the same load on the batched server alone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench import gate
from bench.jobs import Grab
from bench.scenarios import Bench, ScenarioRun, _summarise
from bench.server_process import ServerProcess
from bench.stats import median

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PROCESSES = 3


def postgres_mode() -> bool:
    """Whether BENCH_DB asks for PostgreSQL (anything else: the embedded SQLite)."""
    return os.environ.get("BENCH_DB", "sqlite").strip().lower() in ("postgres", "postgresql")


def _admin_dsn() -> str:
    return os.environ.get("BENCH_PG_URL") or DEFAULT_PG


class Databases:
    """Creates `lr_bench_<hex>` databases and drops them all at `drop_all()`."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new_url(self) -> str:
        name = "lr_bench_" + secrets.token_hex(5)
        asyncio.run(self._run(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        base = _admin_dsn().rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{base}/{name}"

    def drop_all(self) -> None:
        while self.names:
            asyncio.run(self._run(f'DROP DATABASE IF EXISTS "{self.names.pop()}" WITH (FORCE)'))

    @staticmethod
    async def _run(statement: str) -> None:
        conn = await asyncpg.connect(_admin_dsn(), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


@dataclass(kw_only=True)
class MultiResult:
    """Per round: the single-process and the three-process throughput on one pool."""

    single: list[ScenarioRun] = field(default_factory=list)
    multi: list[ScenarioRun] = field(default_factory=list)
    gate: gate.GateResult = field(default_factory=gate.GateResult)

    @property
    def ratio(self) -> float:
        pairs = zip(self.multi, self.single, strict=True)
        return round(median([m.throughput / s.throughput for m, s in pairs if s.throughput]), 3)


def run(bench: Bench, work: Path, viewers: int, rounds: int) -> MultiResult:
    """Start two more servers on the batched server's database and compare, round by round."""
    url = bench.batched.database_url
    extra = [
        ServerProcess(
            f"multi-{i}", work / f"multi-{i}", bench.token_key, batching=True, database_url=url
        )
        for i in (1, 2)
    ]
    servers = [bench.batched, *extra]
    result = MultiResult()
    try:
        for server in extra:
            server.start()
        for server in extra:
            server.wait_serving()
        for round_no in range(1, rounds + 1):
            for name, targets in (("single", [bench.batched]), ("multi", servers)):
                pool_id = bench.batched_setup.pool(f"{name}-m{round_no}", viewers)
                grabs = [Grab(f"{name}-m{round_no}-v{i}", pool_id) for i in range(viewers)]
                n = bench.load.size
                jobs = [
                    bench._job(
                        "grab", targets[i % len(targets)], grabs=tuple(grabs[i::n]), attempts=2
                    )
                    for i in range(n)
                ]
                measured = bench.load.run(jobs, bench.batched.cpu_seconds)
                run_ = _summarise(name, measured)
                records = [g for r in measured.results for g in r.grabs]
                run_.gate = gate.check_grabs(bench.batched.store, [pool_id], records)
                result.gate.merge(run_.gate)
                (result.single if name == "single" else result.multi).append(run_)
    finally:
        for server in extra:
            server.terminate()
        for server in extra:
            server.stop(timeout=10)
    return result
