"""`make bench` in its small BENCH_QUICK=1 form, so the harness cannot rot (no speed asserted)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import require_postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "hot_vs_noop",
    "soldout_vs_noop",
    "soldout_fresh_vs_noop",
    "spread_vs_noop",
    "batched_vs_naive",
    "burst_cancelled",
    "oversold",
    "duplicate_grants",
    "gate_ok",
    "subscribers",
    "rss_per_subscriber_kb",
    "fanout_p99_ms",
    "events_lost",
    "events_duplicated",
    "events_out_of_order",
    "cycles",
    "cycles_rss_growth_mib",
    "cycles_open_streams",
)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_quick_bench_runs_every_scenario_and_its_gate_passes(db: str) -> None:
    if db == "postgres":
        await require_postgres()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env["BENCH_QUICK"] = "1"
    env["BENCH_DB"] = db
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bench"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-4000:]
    summary = json.loads(lines[-1])
    missing = [k for k in KEYS if k not in summary]
    assert not missing, missing
    assert summary["gate_ok"] is True, summary["gate_failures"]
    assert summary["oversold"] == 0
    assert summary["duplicate_grants"] == 0
    assert summary["burst_cancelled"] == 0
    sub = summary["subscribe"]
    assert summary["subscribers"] == sub["subscribers_target"] > 0
    assert summary["events_lost"] == summary["events_duplicated"] == 0
    assert summary["events_out_of_order"] == 0
    assert sub["events_delivered"] >= sub["subscribers_target"], "every stream got events"
    assert summary["db"] == db
    assert summary["cycles"] == summary["cycles_detail"]["cycles_target"] > 0
    assert summary["cycles_open_streams"] == 0
    if db == "postgres":
        assert summary["pg_hot_vs_noop"] > 0 and summary["multi_vs_single"] > 0
        multi = summary["scenarios"]["multi"]  # 3 processes, each retry on another one
        assert multi["calls"] > 0 and multi["gate_ok"], multi
    for name in ("noop", "hot", "soldout", "soldout_fresh", "spread", "naive", "burst"):
        assert summary["scenarios"][name]["calls"] > 0, name
    for name in ("soldout", "soldout_fresh"):  # the hot viewers again, then new ones
        outcomes = summary["scenarios"][name]["outcomes"]
        assert list(outcomes) == ["ALLOCATION_OUTCOME_SOLD_OUT"], (name, outcomes)
    # The readable table comes before the JSON line.
    assert any(line.startswith("hot ") for line in lines[:-1]), done.stdout
