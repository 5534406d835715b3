"""`python -m bench.profile SCENARIO`: run one grab scenario against a batched server under
py-spy and print where the server's CPU time goes (own time and inclusive, by function)."""

from __future__ import annotations

import collections
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.loadgen import LoadGenerator
from bench.scenarios import Bench
from bench.server_process import ServerProcess
from bench.sizes import FULL

SCENARIOS = ("hot", "soldout", "spread", "burst", "noop")


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "hot"
    if name not in SCENARIOS:
        print(f"usage: python -m bench.profile [{'|'.join(SCENARIOS)}]", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="liveresource-profile-"))
    key = "profile-" + secrets.token_urlsafe(32)
    server = ServerProcess("batched", work / "batched", key, batching=True)
    load = LoadGenerator(FULL.load_processes)
    raw = work / "profile.txt"
    try:
        server.start()
        server.wait_serving()
        assert server.proc is not None
        bench = Bench.on_one_server(server, FULL, load, key)
        bench.noop(1000)
        if name == "soldout":
            bench.hot(1, server, FULL.hot_viewers, "hot")
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(server.proc.pid),
                "-r",
                "250",
                "--format",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run = bench.run(name, 1)
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        spy.wait(30)
        print(f"{name}: {run.calls} calls, {run.throughput:.0f}/s, server cpu {run.server_cpu:.0%}")
        _summarise(raw)
        bench.batched_setup.close()
    finally:
        server.terminate()
        server.stop(timeout=10)
        load.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _summarise(raw: Path, top: int = 25) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")
        ]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"\n{total} samples. Own time:")
    for frame, n in own.most_common(top):
        print(f"  {n / total:6.1%}  {frame}")
    print("\nInclusive time:")
    for frame, n in inclusive.most_common(top * 2):
        print(f"  {n / total:6.1%}  {frame}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
