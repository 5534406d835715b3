"""The load processes: spawned once, each given a slice per scenario, released together."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from bench import worker
from bench.jobs import Job, WorkerResult


@dataclass(kw_only=True)
class Measured:
    """All slices of one scenario and the wall time from the release to the last answer."""

    results: list[WorkerResult]
    wall_s: float
    server_cpu_s: float
    released: float = 0.0
    """`time.perf_counter()` when the load was released."""

    @property
    def load_cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.results)


class LoadGenerator:
    """A fixed set of spawned load processes (grpc is not fork-safe), reused by every scenario."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._release = ctx.Event()
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for i in range(processes):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker.serve,
                args=(child_end, self._release),
                name=f"bench-load-{i}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self._conns.append(parent_end)
            self._procs.append(proc)

    @property
    def size(self) -> int:
        return len(self._procs)

    def run(self, jobs: list[Job], server_cpu: Callable[[], float]) -> Measured:
        """Send each process its job, wait until all are ready, release them, collect."""
        if len(jobs) != len(self._conns):
            raise ValueError(f"need {len(self._conns)} jobs, got {len(jobs)}")
        self._release.clear()
        for conn, job in zip(self._conns, jobs, strict=True):
            conn.send(job)
        for conn in self._conns:
            self._expect(conn, worker.READY)
        cpu0 = server_cpu()
        released = time.perf_counter()
        self._release.set()
        results = [self._expect(conn, "result") for conn in self._conns]
        self._release.clear()
        finished = max(r.finished for r in results)
        return Measured(
            results=results,
            wall_s=finished - released,
            server_cpu_s=server_cpu() - cpu0,
            released=released,
        )

    def _expect(self, conn: Connection, kind: str) -> WorkerResult:
        try:
            tag, payload = conn.recv()
        except EOFError:
            codes = [p.exitcode for p in self._procs]
            raise RuntimeError(f"a load process died (exit codes {codes})") from None
        if tag == "error":
            raise RuntimeError(f"load process failed:\n{payload}")
        if tag != kind:
            raise RuntimeError(f"load process sent {tag!r}, expected {kind!r}")
        return payload  # type: ignore[no-any-return]

    def close(self, *, abort: bool = False) -> None:
        """Ask every process to exit (abort: do not wait for its job); terminate stragglers."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(0 if abort else 5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self._conns:
            conn.close()
