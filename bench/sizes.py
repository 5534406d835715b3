"""Scenario sizes of a full run and of the quick (BENCH_QUICK=1) run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each scenario is and how the load is generated."""

    quick: bool
    rounds: int
    noop_calls: int
    """All in flight at once, as many as `hot` and `soldout` have: the ceiling is measured at
    the concurrency it is compared with (a grpc.aio server's cost per call grows with the
    calls it holds: 10,000 Checks in flight ran ~5-10% faster per call than 20,000 here)."""
    hot_viewers: int
    naive_viewers: int
    """`hot` with batching off, smaller: one transaction per call runs at ~200 calls/s here."""
    soldout_grabs: int
    """`soldout`: the `hot` viewers tapping again (at most `hot_viewers`)."""
    soldout_fresh_grabs: int
    """`soldout_fresh`: viewers never seen before (every grab a first token check)."""
    spread_pools: int
    spread_per_pool: int
    burst_calls: int
    warmup_calls: int
    subscribers: int = 10_000
    """Room streams of the `subscribe` scenario (run once, after the rounds)."""
    subscribe_grabs: int = 3_000
    subscribe_reserve_s: float = 30.0
    """Seconds of the budget kept for the `subscribe` scenario (~20-25 s here)."""
    cycles: int = 100_000
    """Subscribe/cancel cycles of the `cycles` scenario (run once, last)."""
    cycles_reserve_s: float = 95.0
    """Seconds of the budget kept for the `cycles` scenario (~70-85 s here)."""
    load_processes: int = 2
    channels_per_process: int = 4
    call_timeout_s: float = 120.0
    budget_s: float = 120.0
    """No new round starts unless it is expected to end within this many seconds of the start."""


FULL = Sizes(
    quick=False,
    rounds=3,
    noop_calls=20_000,
    hot_viewers=20_000,
    naive_viewers=600,
    soldout_grabs=20_000,
    soldout_fresh_grabs=10_000,
    spread_pools=100,
    spread_per_pool=50,
    burst_calls=5_000,
    warmup_calls=2_000,
    budget_s=290.0,
)

QUICK = Sizes(
    quick=True,
    rounds=1,
    noop_calls=1_000,
    hot_viewers=500,
    naive_viewers=250,
    soldout_grabs=500,
    soldout_fresh_grabs=300,
    spread_pools=10,
    spread_per_pool=20,
    burst_calls=300,
    warmup_calls=200,
    subscribers=200,
    subscribe_grabs=100,
    subscribe_reserve_s=0.0,
    cycles=1_000,
    cycles_reserve_s=0.0,
    call_timeout_s=30.0,
)


def sizes_from_env(environ: Mapping[str, str] | None = None) -> Sizes:
    """FULL, or QUICK when BENCH_QUICK is set (not 0); BENCH_ROUNDS, BENCH_BUDGET_S override."""
    env = os.environ if environ is None else environ
    sizes = QUICK if env.get("BENCH_QUICK", "0") not in ("", "0") else FULL
    if rounds := env.get("BENCH_ROUNDS", ""):
        sizes = replace(sizes, rounds=max(1, int(rounds)))
    if budget := env.get("BENCH_BUDGET_S", ""):
        sizes = replace(sizes, budget_s=float(budget))
    return sizes
