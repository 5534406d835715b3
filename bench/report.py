"""The readable table and the one-line JSON summary (medians over rounds, ratios per round)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from bench.cycles import GROWTH_LIMIT_MIB, CyclesResult
from bench.gate import GateResult
from bench.scenarios import ORDER, ScenarioRun
from bench.sizes import Sizes
from bench.stats import median
from bench.subscribe import SubscribeResult

RATIOS = {
    "hot_vs_noop": ("hot", "noop"),
    "soldout_vs_noop": ("soldout", "noop"),
    "soldout_fresh_vs_noop": ("soldout_fresh", "noop"),
    "spread_vs_noop": ("spread", "noop"),
    "batched_vs_naive": ("hot", "naive"),
}
SHORT = {
    "ALLOCATION_OUTCOME_GRANTED": "granted",
    "ALLOCATION_OUTCOME_SOLD_OUT": "sold_out",
    "ALLOCATION_OUTCOME_LIMIT_REACHED": "limit",
    "ALLOCATION_OUTCOME_NOT_OPEN_YET": "not_open",
    "ALLOCATION_OUTCOME_CLOSED": "closed",
    "RESOURCE_EXHAUSTED": "EXHAUSTED",
    "DEADLINE_EXCEEDED": "DEADLINE",
}


def counts(values: Mapping[str, int]) -> str:
    return " ".join(f"{SHORT.get(k, k)}={v}" for k, v in sorted(values.items())) or "-"


def progress_line(round_no: int, rounds: int, run: ScenarioRun) -> str:
    return (
        f"round {round_no}/{rounds} {run.name:<13} {run.calls:>6} calls in {run.wall_s:6.2f}s "
        f"= {run.throughput:8.0f}/s  p50 {run.p50_ms:7.1f} ms  p99 {run.p99_ms:7.1f} ms  "
        f"server cpu {run.server_cpu:4.0%}  load cpu {run.load_cpu:4.0%}  {counts(run.statuses)}  "
        f"{counts(run.outcomes)}  gate {'ok' if run.gate.ok else 'FAIL'}"
    )


def summarise(
    runs: Sequence[ScenarioRun],
    rounds: int,
    sizes: Sizes,
    wall_s: float,
    warmup: GateResult,
    subscribed: SubscribeResult,
    cycled: CyclesResult,
    db: str = "sqlite",
) -> tuple[str, dict[str, Any]]:
    """The table (text) and the summary object (`db`: the backend the bench servers ran on)."""
    by_name: dict[str, list[ScenarioRun]] = {name: [] for name in ORDER}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)  # `multi` too, on PostgreSQL
    scenarios: dict[str, dict[str, Any]] = {}
    overall = GateResult()
    overall.merge(warmup)
    for name, series in by_name.items():
        statuses: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        scenario_gate = GateResult()
        for run in series:
            statuses.update(run.statuses)
            outcomes.update(run.outcomes)
            scenario_gate.merge(run.gate)
        overall.merge(scenario_gate)
        scenarios[name] = {
            "calls": sum(r.calls for r in series),
            "throughput": round(median([r.throughput for r in series]), 1),
            "p50_ms": round(median([r.p50_ms for r in series]), 2),
            "p99_ms": round(median([r.p99_ms for r in series]), 2),
            "server_cpu": round(median([r.server_cpu for r in series]), 2),
            "load_cpu": round(median([r.load_cpu for r in series]), 2),
            "statuses": dict(sorted(statuses.items())),
            "outcomes": dict(sorted(outcomes.items())),
            "gate_ok": scenario_gate.ok,
        }
    summary: dict[str, Any] = {name: _ratio(by_name, a, b) for name, (a, b) in RATIOS.items()}
    summary["db"] = db
    if db == "postgres":
        summary["pg_hot_vs_noop"] = summary["hot_vs_noop"]
        # 3 processes vs the single-process `hot` of the same round, same load.
        summary["multi_vs_single"] = _ratio(by_name, "multi", "hot")
    summary |= {
        "burst_cancelled": scenarios["burst"]["statuses"].get("CANCELLED", 0),
        "oversold": overall.oversold,
        "duplicate_grants": overall.duplicate_grants,
        **subscribed.summary(),
        **cycled.summary(),
        "gate_ok": overall.ok and subscribed.ok and cycled.ok,
        "gate_failures": [
            *overall.failures[:20],
            *_failures("subscribe", subscribed.ok, subscribed.failures, subscribed.summary()),
            *_failures("cycles", cycled.ok, cycled.failures, cycled.summary()),
        ],
        "rounds": rounds,
        "rounds_planned": sizes.rounds,
        "quick": sizes.quick,
        "wall_s": round(wall_s, 1),
        "sizes": dataclasses.asdict(sizes),
        "scenarios": scenarios,
        "subscribe": dataclasses.asdict(subscribed),
        "cycles_detail": dataclasses.asdict(cycled),
    }
    return _table(scenarios, summary), summary


def _failures(
    name: str, ok: bool, failures: Sequence[str], figures: Mapping[str, Any]
) -> list[str]:
    """A gate's failures; a failed gate that named none says so with its figures."""
    if ok or failures:
        return list(failures[:5])
    return [f"{name}: gate failed on its figures {dict(figures)}"]


def _ratio(by_name: Mapping[str, Sequence[ScenarioRun]], a: str, b: str) -> float:
    """The median over rounds of a's throughput over b's in the same round; b's throughput
    at a's time when b ran more than once in the round (the no-op ceiling, before and after)."""
    ratios = []
    for x in by_name[a]:
        same_round = [y for y in by_name[b] if y.round_no == x.round_no]
        ceiling = at_time(same_round, x.mid_s)
        if ceiling:
            ratios.append(x.throughput / ceiling)
    return round(median(ratios), 3)


def at_time(runs: Sequence[ScenarioRun], when: float) -> float:
    """The throughput of `runs` at `when`: interpolated between the runs before and after
    it, else the nearest run's (0 without runs)."""
    if not runs:
        return 0.0
    ordered = sorted(runs, key=lambda r: r.mid_s)
    if when <= ordered[0].mid_s:
        return ordered[0].throughput
    for before, after in pairwise(ordered):
        if when <= after.mid_s:
            span = after.mid_s - before.mid_s
            share = (when - before.mid_s) / span if span > 0 else 0.0
            return before.throughput + share * (after.throughput - before.throughput)
    return ordered[-1].throughput


def _table(scenarios: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    head = (
        f"{'scenario':<13} {'calls':>7} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv cpu':>7} {'load cpu':>8}  {'gate':<4}  statuses / outcomes"
    )
    lines = [
        f"liveresource bench: {summary['rounds']} of {summary['rounds_planned']} round(s)"
        f"{' (quick)' if summary['quick'] else ''}, medians over rounds, calls and statuses summed"
        f"; wall {summary['wall_s']}s",
        head,
        "-" * len(head),
    ]
    for name, s in scenarios.items():
        lines.append(
            f"{name:<13} {s['calls']:>7} {s['throughput']:>8.0f} {s['p50_ms']:>8.1f} "
            f"{s['p99_ms']:>8.1f} {s['server_cpu']:>7.0%} {s['load_cpu']:>8.0%}  "
            f"{'ok' if s['gate_ok'] else 'FAIL':<4}  {counts(s['statuses'])} / "
            f"{counts(s['outcomes'])}"
        )
    sub = summary["subscribe"]
    lines.append(
        f"subscribe: {sub['subscribers']} of {sub['subscribers_target']} streams held "
        f"(subscribed in {sub['subscribe_s']}s), {sub['rss_per_subscriber_kb']} KB RSS each, "
        f"fan-out p50 {sub['fanout_p50_ms']} ms p99 {sub['fanout_p99_ms']} ms, "
        f"{sub['events_delivered']} events delivered ({sub['events_in_store']} in the store), "
        f"lost {sub['events_lost']} dup {sub['events_duplicated']} "
        f"out-of-order {sub['events_out_of_order']} lagging snapshots {sub['snapshots_lagging']}"
    )
    cyc = summary["cycles_detail"]
    lines.append(
        f"cycles: {cyc['cycles']} of {cyc['cycles_target']} subscribe/cancel cycles "
        f"({cyc['cycles_per_s']}/s), server RSS grew {cyc['cycles_rss_growth_mib']} MiB "
        f"(limit {GROWTH_LIMIT_MIB}; {cyc['cycles_rss_growth_second_half_mib']} MiB over the "
        f"second half), open streams after: {cyc['cycles_open_streams']}"
    )
    lines.append("")
    lines.append(
        "  ".join(
            f"{k}={summary[k]}"
            for k in (
                *RATIOS,
                *(("pg_hot_vs_noop", "multi_vs_single") if "multi_vs_single" in summary else ()),
                "burst_cancelled",
                "oversold",
                "duplicate_grants",
                "gate_ok",
            )
        )
    )
    lines.extend(f"gate failure: {f}" for f in summary["gate_failures"])
    return "\n".join(lines)


def json_line(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, separators=(",", ":"), sort_keys=False)
