"""`python -m bench.ab`: server variants side by side, fed by the same load processes.

A change on the grab path moves a `make bench` ratio by less than the machine's noise between
runs (the no-op ceiling moves ±15% between rounds). Here each variant is a server process of
its own, started from a git ref or from this checkout as it is; every round runs the same
scenarios on each variant in turn (the order reversed every other round), so drift hits
them alike, and the result is each variant's throughput relative to the first variant's in
the same round, plus its own `hot`/`noop` and `soldout`/`noop` ratios.

    python -m bench.ab main=HEAD~1 change=.            # the working tree against its parent
    python -m bench.ab --rounds 6 --scenarios noop,soldout a=main b=my-branch

Refs other than `.` are checked out with `git worktree` into a temporary folder (removed at
the end); every variant runs on this checkout's virtualenv. Each server gets a warm-up and
one `hot` pool before the rounds, so `soldout` may run without `hot` in the list. The gates
of `make bench` run after every grab scenario: a variant that oversells shows as FAIL and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGenerator
from bench.scenarios import Bench, ScenarioRun
from bench.server_process import REPO_ROOT, ServerProcess
from bench.sizes import FULL, QUICK, Sizes
from bench.stats import median

SCENARIOS = ("noop", "hot", "soldout")
"""The scenarios a comparison can run (as `make bench` runs them)."""
SETUP_ROUND = 0
"""The round number of each variant's set-up `hot` pool (`soldout` without `hot` uses it)."""


@dataclass
class Variant:
    """One server under comparison and what ran on it."""

    name: str
    ref: str
    root: Path
    server: ServerProcess
    bench: Bench | None = None
    runs: dict[str, list[ScenarioRun]] = field(default_factory=dict)


def parse_variant(text: str) -> tuple[str, str]:
    """`name=ref` (ref: a git commit, branch or tag, or `.` for this checkout as it is)."""
    name, sep, ref = text.partition("=")
    if not sep or not name or not ref or not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected NAME=REF (NAME: letters, digits, - _): {text}")
    return name, ref


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("variants", nargs="+", type=parse_variant, metavar="NAME=REF")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument(
        "--scenarios",
        default="noop,soldout",
        help=f"run in this order, of {', '.join(SCENARIOS)} (default noop,soldout)",
    )
    parser.add_argument(
        "--calls", type=int, help="calls per scenario (default: as make bench, 20,000)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    args.scenarios = tuple(s for s in args.scenarios.split(",") if s)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    names = [name for name, _ in args.variants]
    if len(set(names)) != len(names):
        parser.error("variant names must differ")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    calls = args.calls or sizes.noop_calls
    return replace(
        sizes,
        rounds=args.rounds,
        noop_calls=calls,
        hot_viewers=calls,
        soldout_grabs=calls,
    )


def checkout(ref: str, path: Path) -> Path:
    """This checkout for `.`, else a detached worktree of `ref` at `path`."""
    if ref == ".":
        return REPO_ROOT
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "--force", str(path), ref],
        check=True,
        capture_output=True,
        text=True,
    )
    return path


def remove_checkout(root: Path) -> None:
    if root == REPO_ROOT:
        return
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(root)],
        check=False,
        capture_output=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    sizes = _sizes(args)
    work = Path(tempfile.mkdtemp(prefix="liveresource-ab-"))
    key = "bench-" + secrets.token_urlsafe(32)
    variants: list[Variant] = []
    load: LoadGenerator | None = None
    try:
        for name, ref in args.variants:
            try:
                root = checkout(ref, work / "trees" / name)
            except subprocess.CalledProcessError as exc:
                print(f"cannot check out {ref!r}: {exc.stderr.strip()}", file=sys.stderr)
                return 2
            server = ServerProcess(name, work / name, key, batching=True, repo_root=root)
            variants.append(Variant(name, ref, root, server))
        load = LoadGenerator(sizes.load_processes)
        for v in variants:
            v.server.start()
        for v in variants:
            v.server.wait_serving()
            v.bench = _set_up(v.server, sizes, load, key)
            _log(f"{v.name} ({v.ref}): serving on {v.server.target}, warmed up")
        for round_no in range(1, sizes.rounds + 1):
            order = variants if round_no % 2 else variants[::-1]
            for v in order:
                _run_round(v, args.scenarios, round_no)
        table, summary = summarise(variants, args.scenarios)
        print(table)
        print(json.dumps(summary, separators=(",", ":")), flush=True)
        return 0 if all(r.gate.ok for v in variants for rs in v.runs.values() for r in rs) else 1
    finally:
        for v in variants:
            if v.bench is not None:
                v.bench.batched_setup.close()
            v.server.stop(timeout=10)
        if load is not None:
            load.close()
        for v in variants:
            remove_checkout(v.root)
        shutil.rmtree(work, ignore_errors=True)


def _set_up(server: ServerProcess, sizes: Sizes, load: LoadGenerator, key: str) -> Bench:
    bench = Bench.on_one_server(server, sizes, load, key)
    bench.noop(sizes.warmup_calls)
    bench.hot(SETUP_ROUND, server, sizes.hot_viewers, "hot")
    return bench


def _run_round(v: Variant, scenarios: Sequence[str], round_no: int) -> None:
    bench = v.bench
    assert bench is not None
    for name in scenarios:
        if name == "soldout":
            # The viewers of this round's `hot` pool when it ran, else of the set-up's pool.
            run = bench.soldout(round_no if round_no in bench.hot_pools else SETUP_ROUND)
        else:
            run = bench.run(name, round_no)
        run.round_no = round_no
        v.runs.setdefault(name, []).append(run)
        _log(
            f"round {round_no} {v.name:<12} {name:<8} {run.throughput:8.0f}/s  "
            f"server {_server_us(run):5.0f} µs/call  gate {'ok' if run.gate.ok else 'FAIL'}"
        )


def _server_us(run: ScenarioRun) -> float:
    return run.server_cpu * run.wall_s / run.calls * 1e6 if run.calls else 0.0


def summarise(variants: Sequence[Variant], scenarios: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """A table per scenario (each variant against the first, round by round) and the same as
    one JSON object."""
    first = variants[0]
    lines = [
        f"{'variant':<12} {'scenario':<8} {'calls/s':>8} {'µs/call':>8} "
        f"{'vs ' + first.name:>14} {'range':>13} {'per round'}"
    ]
    summary: dict[str, Any] = {}
    for v in variants:
        out: dict[str, Any] = {"ref": v.ref}
        for name in scenarios:
            runs = v.runs.get(name, [])
            base = first.runs.get(name, [])
            rel = [r.throughput / b.throughput for r, b in zip(runs, base, strict=True) if b.wall_s]
            out[name] = {
                "throughput": round(median([r.throughput for r in runs]), 1),
                "server_us_per_call": round(median([_server_us(r) for r in runs]), 1),
                f"vs_{first.name}": round(median(rel), 3),
                "gate_ok": all(r.gate.ok for r in runs),
            }
            span = f"{min(rel):.3f}-{max(rel):.3f}" if rel else "-"
            lines.append(
                f"{v.name:<12} {name:<8} {out[name]['throughput']:>8.0f} "
                f"{out[name]['server_us_per_call']:>8.0f} {out[name][f'vs_{first.name}']:>14.3f} "
                f"{span:>13} {' '.join(f'{x:.3f}' for x in rel)}"
            )
        for name in ("hot", "soldout"):
            if name in scenarios and "noop" in scenarios:
                ratios = [
                    r.throughput / n.throughput
                    for r, n in zip(v.runs[name], v.runs["noop"], strict=True)
                    if n.wall_s
                ]
                out[f"{name}_vs_noop"] = round(median(ratios), 3)
                lines.append(
                    f"{v.name:<12} {name}/noop per round {' '.join(f'{x:.3f}' for x in ratios)}"
                    f"  median {out[f'{name}_vs_noop']:.3f}"
                )
        summary[v.name] = out
    return "\n".join(lines), summary


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":  # spawned load processes import this module too
    raise SystemExit(main())
