"""`python -m bench.ab` in a small run: two variants (a git ref and this checkout) side by
side, so the comparison tool cannot rot (no speed asserted)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ab

REPO_ROOT = Path(__file__).resolve().parents[2]


def _worktrees() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in listed.splitlines() if line.startswith("worktree ")]


async def test_two_variants_run_side_by_side_and_their_checkouts_are_removed() -> None:
    before = _worktrees()
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "bench.ab",
            "--quick",
            "--rounds",
            "2",
            "--scenarios",
            "noop,hot,soldout",
            "base=HEAD",
            "here=.",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(summary) == ["base", "here"]
    assert summary["base"]["ref"] == "HEAD" and summary["here"]["ref"] == "."
    for name in ("base", "here"):
        for scenario in ("noop", "hot", "soldout"):
            figures = summary[name][scenario]
            assert figures["throughput"] > 0
            assert figures["gate_ok"] is True
        assert summary[name]["soldout_vs_noop"] > 0
        assert summary[name]["hot_vs_noop"] > 0
    assert summary["base"]["noop"]["vs_base"] == 1.0
    # Every round ran on each variant, in alternating order.
    rounds = [line.split()[:3] for line in done.stderr.splitlines() if line.startswith("round ")]
    assert rounds[0][2] == "base" and rounds[3][2] == "here" and rounds[6][2] == "here"
    assert len(rounds) == 2 * 2 * 3
    assert _worktrees() == before


def test_a_variant_must_be_name_equals_ref() -> None:
    with pytest.raises(SystemExit) as exited:
        ab.main(["HEAD"])
    assert exited.value.code == 2
    assert ab.parse_variant("my-change=HEAD~1") == ("my-change", "HEAD~1")


def test_an_unknown_scenario_or_a_repeated_name_is_refused() -> None:
    for argv in (["--scenarios", "noop,spread", "a=."], ["a=.", "a=HEAD"]):
        with pytest.raises(SystemExit) as exited:
            ab.main(argv)
        assert exited.value.code == 2


def test_a_ref_git_does_not_know_is_reported_before_any_server_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ab.main(["a=.", "b=no-such-ref-anywhere"]) == 2
    assert "cannot check out 'no-such-ref-anywhere'" in capsys.readouterr().err
