"""The bench's PostgreSQL mode: how `multi` routes calls, and the bench database URLs."""

from __future__ import annotations

from collections import Counter

from bench import multi
from bench.worker import route


def test_multi_sends_every_retry_to_another_process_and_spreads_calls_evenly() -> None:
    targets, per = 3, 4
    per_target: Counter[int] = Counter()
    for i in range(1200):
        channels = route(i, targets, per, attempts=2)
        processes = [c // per for c in channels]
        assert processes[0] != processes[1]
        per_target.update(processes)
    assert set(per_target.values()) == {800}
    assert set(Counter(route(i, targets, per, 1)[0] for i in range(1200)).values()) == {100}


def test_one_target_keeps_both_attempts_on_one_channel_as_before() -> None:
    assert [route(i, 1, 4, 2) for i in range(5)] == [[0, 0], [1, 1], [2, 2], [3, 3], [0, 0]]


def test_bench_databases_go_to_the_server_of_bench_pg_url() -> None:
    default: dict[str, str] = {}
    assert multi.admin_dsn(default) == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert multi.store_url("lr_bench_1", default) == (
        "postgresql+asyncpg://postgres@127.0.0.1:5432/lr_bench_1"
    )
    env = {"BENCH_PG_URL": "postgresql://me:pw@db.internal:6543/admin?connect_timeout=5"}
    assert multi.admin_dsn(env) == "postgresql://me:pw@db.internal:6543/admin?connect_timeout=5"
    assert multi.store_url("lr_bench_2", env) == (
        "postgresql+asyncpg://me:pw@db.internal:6543/lr_bench_2?connect_timeout=5"
    )


def test_bench_db_selects_postgres() -> None:
    assert multi.postgres_mode({"BENCH_DB": "postgres"})
    assert not multi.postgres_mode({})
    assert not multi.postgres_mode({"BENCH_DB": "sqlite"})
