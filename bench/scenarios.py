"""The scenarios: each sets up fresh pools (or uses the round's `hot` pool), runs its load
once and gates the store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench import gate
from bench.jobs import Grab, GrabRecord, Job
from bench.loadgen import LoadGenerator, Measured
from bench.provision import Provisioner
from bench.server_process import ServerProcess
from bench.sizes import Sizes
from bench.stats import percentile

ORDER = ("noop", "hot", "soldout", "soldout_fresh", "spread", "noop", "naive", "burst")
"""A round's scenarios. The no-op ceiling is measured twice, before and after the scenarios
compared with it: a ratio divides by the ceiling interpolated to the scenario's time, so a
machine that slows or speeds up within a round moves both sides alike."""


@dataclass(kw_only=True)
class ScenarioRun:
    """One scenario in one round."""

    name: str
    calls: int
    wall_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    outcomes: dict[str, int]
    server_cpu: float
    """Server CPU seconds per wall second (1.0 = one core busy)."""
    load_cpu: float
    """Load processes' CPU seconds per wall second, all of them together."""
    gate: gate.GateResult = field(default_factory=gate.GateResult)
    round_no: int = 0
    mid_s: float = 0.0
    """When the run was half done (`time.perf_counter`): where ratios read the ceiling."""

    @property
    def throughput(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Bench:
    """What every scenario needs: sizes, the load processes, the two servers."""

    sizes: Sizes
    load: LoadGenerator
    token_key: str
    batched: ServerProcess
    naive: ServerProcess
    batched_setup: Provisioner
    naive_setup: Provisioner
    hot_pools: dict[int, tuple[str, list[GrabRecord]]] = field(default_factory=dict)
    """Per round: the batched hot pool and every grab made at it so far (for soldout)."""

    @classmethod
    def on_one_server(
        cls, server: ServerProcess, sizes: Sizes, load: LoadGenerator, token_key: str
    ) -> Bench:
        """Every scenario on `server` (`naive` too), set up through one provisioner: for the
        tools that study one server (`bench.profile`, `bench.ab`)."""
        setup = Provisioner(server.target, token_key)
        return cls(
            sizes=sizes,
            load=load,
            token_key=token_key,
            batched=server,
            naive=server,
            batched_setup=setup,
            naive_setup=setup,
        )

    def run(self, name: str, round_no: int) -> ScenarioRun:
        if name == "noop":
            return self.noop(self.sizes.noop_calls)
        if name == "hot":
            return self.hot(round_no, self.batched, self.sizes.hot_viewers, name)
        if name == "soldout":
            return self.soldout(round_no)
        if name == "soldout_fresh":
            return self.soldout(round_no, fresh=True)
        if name == "spread":
            return self.spread(round_no)
        if name == "naive":
            return self.hot(round_no, self.naive, self.sizes.naive_viewers, name)
        if name == "burst":
            return self.burst(round_no)
        raise ValueError(f"unknown scenario {name!r}")

    def noop(self, calls: int) -> ScenarioRun:
        n = self.load.size
        jobs = [
            self._job("noop", self.batched, noop_calls=calls // n + (i < calls % n))
            for i in range(n)
        ]
        measured = self._measure(jobs, self.batched)
        run = _summarise("noop", measured)
        run.gate = gate.check_noop(run.statuses, run.outcomes, calls)
        return run

    def hot(self, round_no: int, server: ServerProcess, viewers: int, name: str) -> ScenarioRun:
        """`viewers` distinct viewers grab one pool of as many coupons, each retrying once."""
        setup = self.batched_setup if server is self.batched else self.naive_setup
        pool_id = setup.pool(f"{name}-r{round_no}", viewers)
        grabs = [Grab(f"{name}-r{round_no}-v{i}", pool_id) for i in range(viewers)]
        run, records = self._grab(name, server, grabs, attempts=2)
        run.gate = _check(server, [pool_id], records)
        if server is self.batched and name == "hot":
            self.hot_pools[round_no] = (pool_id, records)
        return run

    def soldout(self, round_no: int, *, fresh: bool = False) -> ScenarioRun:
        """More grabs at the hot pool of this round once it is empty.

        Not fresh: the round's `hot` viewers tap again (each with a new request_id), their
        apps presenting the tokens they already hold, as an app in the room does: the
        sold-out answer itself. Fresh: viewers never seen before, so every grab also pays
        a first verification of its token."""
        pool_id, earlier = self.hot_pools[round_no]
        if fresh:
            name = "soldout_fresh"
            viewers = [f"soldout-r{round_no}-v{i}" for i in range(self.sizes.soldout_fresh_grabs)]
        else:
            # In `hot`'s order, so each viewer lands on the load process that holds its token.
            name = "soldout"
            count = min(self.sizes.soldout_grabs, self.sizes.hot_viewers)
            viewers = [f"hot-r{round_no}-v{i}" for i in range(count)]
        grabs = [Grab(viewer, pool_id) for viewer in viewers]
        run, records = self._grab(name, self.batched, grabs, attempts=1)
        earlier.extend(records)
        run.gate = _check(self.batched, [pool_id], earlier)
        return run

    def spread(self, round_no: int) -> ScenarioRun:
        """Many pools in as many rooms, each grabbed by as many viewers as it has coupons."""
        per_pool = self.sizes.spread_per_pool
        rooms = [f"spread-r{round_no}-p{k}" for k in range(self.sizes.spread_pools)]
        pool_ids = self.batched_setup.pools(rooms, per_pool)
        grabs = [
            Grab(f"spread-r{round_no}-v{i}-p{k}", pool_id)
            for i in range(per_pool)
            for k, pool_id in enumerate(pool_ids)
        ]
        run, records = self._grab("spread", self.batched, grabs, attempts=1)
        run.gate = _check(self.batched, pool_ids, records)
        return run

    def burst(self, round_no: int) -> ScenarioRun:
        """Distinct viewers all grab one pool at the same instant."""
        calls = self.sizes.burst_calls
        pool_id = self.batched_setup.pool(f"burst-r{round_no}", calls)
        grabs = [Grab(f"burst-r{round_no}-v{i}", pool_id) for i in range(calls)]
        run, records = self._grab("burst", self.batched, grabs, attempts=1)
        run.gate = _check(self.batched, [pool_id], records)
        return run

    def _grab(
        self, name: str, server: ServerProcess, grabs: Sequence[Grab], *, attempts: int
    ) -> tuple[ScenarioRun, list[GrabRecord]]:
        n = self.load.size
        jobs = [
            self._job("grab", server, grabs=tuple(grabs[i::n]), attempts=attempts) for i in range(n)
        ]
        measured = self._measure(jobs, server)
        records = [g for r in measured.results for g in r.grabs]
        return _summarise(name, measured), records

    def _job(
        self,
        kind: Literal["noop", "grab"],
        server: ServerProcess,
        *,
        noop_calls: int = 0,
        grabs: tuple[Grab, ...] = (),
        attempts: int = 1,
    ) -> Job:
        return Job(
            kind=kind,
            target=server.target,
            token_key=self.token_key,
            channels=self.sizes.channels_per_process,
            timeout_s=self.sizes.call_timeout_s,
            noop_calls=noop_calls,
            grabs=grabs,
            attempts=attempts,
        )

    def _measure(self, jobs: list[Job], server: ServerProcess) -> Measured:
        return self.load.run(jobs, server.cpu_seconds)


def _check(
    server: ServerProcess, pool_ids: list[str], records: list[GrabRecord]
) -> gate.GateResult:
    return gate.check_grabs(server.store, pool_ids, records)


def _summarise(name: str, measured: Measured) -> ScenarioRun:
    latencies = [x for r in measured.results for x in r.latencies_s]
    statuses: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for r in measured.results:
        statuses.update(r.statuses)
        outcomes.update(r.outcomes)
    wall = measured.wall_s
    return ScenarioRun(
        name=name,
        calls=len(latencies),
        wall_s=wall,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        statuses=dict(statuses),
        outcomes=dict(outcomes),
        server_cpu=measured.server_cpu_s / wall if wall > 0 else 0.0,
        load_cpu=measured.load_cpu_s / wall if wall > 0 else 0.0,
        mid_s=measured.released + wall / 2,
    )
