"""How the bench's ratios read the no-op ceiling: at the scenario's time within its round."""

from __future__ import annotations

from bench.report import _ratio, at_time
from bench.scenarios import ScenarioRun


def _run(name: str, round_no: int, mid_s: float, per_s: float) -> ScenarioRun:
    return ScenarioRun(
        name=name,
        calls=int(per_s * 10),
        wall_s=10.0,
        p50_ms=1.0,
        p99_ms=2.0,
        statuses={},
        outcomes={},
        server_cpu=1.0,
        load_cpu=1.0,
        round_no=round_no,
        mid_s=mid_s,
    )


def test_the_ceiling_is_interpolated_between_the_runs_around_a_scenario() -> None:
    noops = [_run("noop", 1, 0.0, 1000), _run("noop", 1, 40.0, 2000)]
    assert at_time(noops, 10.0) == 1250
    assert at_time(noops, -5.0) == 1000  # before the first: the first
    assert at_time(noops, 50.0) == 2000  # after the last: the last
    assert at_time(noops[:1], 30.0) == 1000
    assert at_time([], 3.0) == 0.0


def test_a_ratio_divides_by_the_ceiling_of_its_own_round_at_its_time() -> None:
    by_name = {
        "noop": [
            _run("noop", 1, 0.0, 1000),
            _run("noop", 1, 40.0, 3000),
            _run("noop", 2, 100.0, 2000),
            _run("noop", 2, 140.0, 2000),
            _run("noop", 3, 200.0, 500),
            _run("noop", 3, 240.0, 500),
        ],
        "hot": [
            _run("hot", 1, 20.0, 1000),
            _run("hot", 2, 110.0, 1200),
            _run("hot", 3, 205.0, 500),
        ],
        "naive": [
            _run("naive", 1, 30.0, 100),
            _run("naive", 2, 130.0, 100),
            _run("naive", 3, 230.0, 50),
        ],
    }
    # Round 1: 1000 against 2000 (half-way); round 2: 0.6; round 3: 1.0. Median 0.6.
    assert _ratio(by_name, "hot", "noop") == 0.6
    # One run each per round: the plain ratio (10, 12, 10).
    assert _ratio(by_name, "hot", "naive") == 10
