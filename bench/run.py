"""Starts the two servers and the load processes, runs the rounds, prints table and JSON."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench import cycles, multi, report, subscribe
from bench.gate import GateResult
from bench.loadgen import LoadGenerator
from bench.provision import Provisioner
from bench.scenarios import ORDER, Bench, ScenarioRun
from bench.server_process import ServerProcess
from bench.sizes import Sizes, sizes_from_env

SHUTDOWN_S = 5.0
"""Time kept for stopping the servers and printing, out of the budget."""


def main() -> int:
    """Run the benchmark; exit status 0 when it ran (the gate is reported, not asserted)."""
    sizes = sizes_from_env()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="liveresource-bench-"))
    token_key = "bench-" + secrets.token_urlsafe(32)
    postgres = multi.postgres_mode()
    databases = multi.Databases()
    servers: list[ServerProcess] = []  # batched, naive, then the extra ones of `multi`
    load: LoadGenerator | None = None
    aborted = True
    try:
        # PostgreSQL: a fresh database for each bench server; `multi` shares the batched one's.
        urls = (databases.new_url(), databases.new_url()) if postgres else ("", "")
        servers = [
            ServerProcess(
                "batched", work / "batched", token_key, batching=True, database_url=urls[0]
            ),
            ServerProcess("naive", work / "naive", token_key, batching=False, database_url=urls[1]),
            *(multi.extra_servers(work, token_key, urls[0]) if postgres else []),
        ]
        load = LoadGenerator(sizes.load_processes)
        for server in servers:
            server.start()
        runs, warmup, rounds = _rounds(sizes, load, token_key, servers, started)
        for server in servers:
            if (status := server.stop()) != 0:
                _log(f"{server.name} server exited with {status}:\n{server.log_tail()}")
        _log(f"subscribe: {sizes.subscribers} room streams, {sizes.subscribe_grabs} grabs")
        subscribed = subscribe.run(
            work, token_key, sizes.subscribers, sizes.subscribe_grabs, sizes.load_processes
        )
        for line in subscribed.per_event:
            _log(f"subscribe: {line}")
        _log(f"subscribe: {subscribed.summary()} gate {'ok' if subscribed.ok else 'FAIL'}")
        _log(f"cycles: {sizes.cycles} subscribe/cancel cycles")
        cycled = cycles.run(work, token_key, sizes.cycles, sizes.load_processes)
        _log(
            f"cycles: {cycled.summary()} at {cycled.cycles_per_s}/s "
            f"gate {'ok' if cycled.ok else 'FAIL'}"
        )
        aborted = False
    except KeyboardInterrupt:
        _log("interrupted: stopping the servers and the load processes")
        return 130
    except BaseException:
        for server in servers:
            _log(f"--- {server.name} server log (tail) ---\n{server.log_tail()}")
        raise
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.stop(timeout=10)
        if load is not None:
            load.close(abort=aborted)
        if left := databases.drop_all():
            _log(f"could not drop the bench database(s) {', '.join(left)}")
        if os.environ.get("BENCH_KEEP", "0") in ("", "0"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            _log(f"kept {work}")
    table, summary = report.summarise(
        runs,
        rounds,
        sizes,
        time.perf_counter() - started,
        warmup,
        subscribed,
        cycled,
        db="postgres" if postgres else "sqlite",
    )
    print(table)
    print(report.json_line(summary), flush=True)
    return 0


def _rounds(
    sizes: Sizes,
    load: LoadGenerator,
    token_key: str,
    servers: list[ServerProcess],
    started: float,
) -> tuple[list[ScenarioRun], GateResult, int]:
    """Warm up, then the rounds that fit in the time budget (how many ran). With more than
    two servers (PostgreSQL), every round runs `multi` over the batched one and the extras."""
    batched, naive, *extra = servers
    for server in servers:
        server.wait_serving()
    order = multi.POSTGRES_ORDER if extra else ORDER
    bench = Bench(
        sizes=sizes,
        load=load,
        token_key=token_key,
        batched=batched,
        naive=naive,
        batched_setup=Provisioner(batched.target, token_key),
        naive_setup=Provisioner(naive.target, token_key),
    )
    try:
        warmup = _warm_up(bench, [batched, *extra] if extra else [])
        runs: list[ScenarioRun] = []
        longest = 0.0
        for round_no in range(1, sizes.rounds + 1):
            elapsed = time.perf_counter() - started
            budget = sizes.budget_s - sizes.subscribe_reserve_s - sizes.cycles_reserve_s
            if round_no > 1 and elapsed + 1.1 * longest + SHUTDOWN_S > budget:
                _log(f"stopping after {round_no - 1} round(s): the time budget is spent")
                return runs, warmup, round_no - 1
            round_start = time.perf_counter()
            if extra:  # PostgreSQL: planner statistics, as autoanalyze would keep them
                multi.analyze(batched.database_url, naive.database_url)
            for name in order:
                if name == "multi":
                    run = multi.run(bench, [batched, *extra], round_no)
                else:
                    run = bench.run(name, round_no)
                run.round_no = round_no
                _log(report.progress_line(round_no, sizes.rounds, run))
                runs.append(run)
            longest = max(longest, time.perf_counter() - round_start)
        return runs, warmup, sizes.rounds
    finally:
        bench.batched_setup.close()
        bench.naive_setup.close()


def _warm_up(bench: Bench, multi_servers: list[ServerProcess]) -> GateResult:
    """A small noop and a small hot on each server (and over the `multi` servers):
    connections, caches, first statements."""
    gate = GateResult()
    n = bench.sizes.warmup_calls
    gate.merge(bench.noop(n).gate)
    gate.merge(bench.hot(0, bench.batched, n // 4, "warmup-batched").gate)
    gate.merge(bench.hot(0, bench.naive, n // 20, "warmup-naive").gate)
    if multi_servers:
        gate.merge(multi.grab(bench, multi_servers, "warmup-multi", n // 4).gate)
    _log(f"warmed up: {n} health checks, {n // 4} + {n // 20} viewers grabbing twice")
    return gate


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
