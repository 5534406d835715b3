"""The `cycles` scenario: many room subscriptions opened and cancelled, and what they leave.

A server of its own gets `cycles` subscribe/cancel cycles from the spawned subscriber
processes: each cycle opens a `StreamAllocationInfo` stream, reads its snapshot and cancels
it, up to CYCLES_IN_FLIGHT at once per process. After a warm-up (allocators and caches), the
bench compares the server's RSS before, halfway through and after the cycles, and reads the
open-streams gauge from its /metrics: a stream ended by cancellation must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import time
import traceback
import urllib.request
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from bench.provision import Provisioner
from bench.server_process import ServerProcess
from bench.subscribe import rss
from client_sdk.tokens import mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc

CYCLES_IN_FLIGHT = 100
WARMUP_CYCLES = 30_000
"""RSS creeps up over the first tens of thousands of cycles, then stays (a leak would keep
growing at the same pace): after 10,000 warm-up cycles, 100,000 more grew it by 3.1-5.8 MiB,
0.5-1.6 of it in their second half; after 30,000 warm-up cycles, by 0.35 and 1.58 MiB."""
GROWTH_LIMIT_MIB = 5.0
RSS_GATED_FROM = 50_000
"""Runs of fewer cycles (the quick bench) report the RSS growth but are not gated on it: over a
thousand cycles it measures a step of the allocator, not a leak (1,000 cycles grew 3.4 MiB in
one run, 6.0 MiB in another even after 5,000 warm-up cycles). The memory test of the suite
(tests/integration/test_stream_scale.py) measures windows long enough to tell."""
_METHOD = "/liveresource.v1.ResourceAllocationService/StreamAllocationInfo"
KEYS = (
    "cycles",
    "cycles_rss_growth_mib",
    "cycles_rss_growth_second_half_mib",
    "cycles_open_streams",
)


@dataclass(kw_only=True)
class CyclesResult:
    """What the scenario measured (the KEYS) and whether it passes its gate."""

    cycles_target: int
    cycles: int = 0
    cycles_rss_growth_mib: float = 0.0
    cycles_rss_growth_second_half_mib: float = 0.0
    """Growth over the second half of the cycles only: a leak grows in both halves alike,
    the allocator's high-water mark only in the first."""
    cycles_open_streams: int = -1
    cycles_per_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # The RSS limit and the open-streams gauge are checked where they are measured
        # (`run`), each a named failure.
        return not self.failures and self.cycles == self.cycles_target

    def summary(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in KEYS}


# --- in a cycling process -----------------------------------------------------------------


async def _cycle_many(target: str, token: str, room_id: str, n: int) -> tuple[int, list[str]]:
    """`n` cycles, CYCLES_IN_FLIGHT at a time; how many completed and the first errors."""
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(4)
    ]
    methods = [c.unary_stream(_METHOD) for c in channels]
    request = svc.StreamAllocationInfoRequest(room_id=room_id).SerializeToString()
    metadata = (("authorization", f"Bearer {token}"),)
    slots = asyncio.Semaphore(CYCLES_IN_FLIGHT)
    done = 0
    errors: list[str] = []

    async def cycle(i: int) -> None:
        nonlocal done
        async with slots:
            call = methods[i % len(methods)](request, metadata=metadata, timeout=60)
            try:
                first = svc.StreamAllocationInfoResponse.FromString(await call.read())
                if first.WhichOneof("payload") == "snapshot":
                    done += 1
                elif len(errors) < 5:
                    errors.append(f"first message {first.WhichOneof('payload')}")
            except grpc.aio.AioRpcError as exc:
                if len(errors) < 5:
                    errors.append(f"{exc.code().name}: {exc.details()}")
            finally:
                call.cancel()

    try:
        await asyncio.gather(*(cycle(i) for i in range(n)))
    finally:
        for channel in channels:
            await channel.close()
    return done, errors


def cycler_main(conn: Connection, target: str, token: str, room_id: str) -> None:
    """Process entry point: run the batches of cycles it is sent, until it is sent None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while (n := conn.recv()) is not None:
            conn.send(("done", asyncio.run(_cycle_many(target, token, room_id, n))))
    except EOFError:
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


# --- in the bench process -----------------------------------------------------------------


def run(work: Path, token_key: str, cycles: int, processes: int) -> CyclesResult:
    """Start a server, warm it up, run the cycles, compare its RSS and read its gauge."""
    result = CyclesResult(cycles_target=cycles)
    server = ServerProcess("cycles", work / "cycles", token_key, batching=True)
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    try:
        server.start()
        server.wait_serving()
        setup = Provisioner(server.target, token_key)
        room_id = f"cycles-{uuid.uuid4().hex[:8]}"
        setup.pool(room_id, 10)
        setup.close()
        token = mint_token("bench-cycler", "viewer", key=token_key)
        for _ in range(processes):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=cycler_main,
                args=(child_end, server.target, token, room_id),
                daemon=True,
            )
            proc.start()
            child_end.close()
            conns.append(parent_end)
            procs.append(proc)
        _in_parallel(conns, min(WARMUP_CYCLES, cycles))
        time.sleep(1.0)
        assert server.proc is not None
        before = rss(server.proc.pid)
        started = time.perf_counter()
        done, errors = _in_parallel(conns, cycles // 2)
        halfway = rss(server.proc.pid)
        more, errors_after = _in_parallel(conns, cycles - cycles // 2)
        done += more
        errors = [*errors, *errors_after][:5]
        elapsed = time.perf_counter() - started
        time.sleep(1.0)  # cancellations still in flight reach the server
        result.cycles = done
        result.cycles_per_s = round(done / elapsed, 1) if elapsed > 0 else 0.0
        after = rss(server.proc.pid)
        result.cycles_rss_growth_mib = round((after - before) / 2**20, 2)
        result.cycles_rss_growth_second_half_mib = round((after - halfway) / 2**20, 2)
        result.cycles_open_streams = _open_streams(server.metrics_port)
        result.failures.extend(errors)
        if cycles >= RSS_GATED_FROM and result.cycles_rss_growth_mib >= GROWTH_LIMIT_MIB:
            result.failures.append(
                f"cycles: server RSS grew {result.cycles_rss_growth_mib} MiB "
                f"(limit {GROWTH_LIMIT_MIB})"
            )
        if result.cycles_open_streams != 0:
            result.failures.append(f"cycles: {result.cycles_open_streams} streams still open")
    except Exception as exc:  # reported in the gate, the bench goes on to print
        result.failures.append(f"cycles: {type(exc).__name__}: {exc}"[:500])
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        server.terminate()
        server.stop(timeout=10)
    return result


def _in_parallel(conns: list[Connection], cycles: int) -> tuple[int, list[str]]:
    """Split `cycles` over the processes, run them at once; completed and the first errors."""
    n = len(conns)
    for i, conn in enumerate(conns):
        conn.send(cycles // n + (i < cycles % n))
    done, errors = 0, []
    for conn in conns:
        if not conn.poll(600):
            raise RuntimeError("a cycling process sent nothing within 600 s")
        tag, payload = conn.recv()
        if tag != "done":
            raise RuntimeError(f"cycling process failed: {str(payload)[-2000:]}")
        done += payload[0]
        errors.extend(payload[1])
    return done, errors[:5]


def _open_streams(port: int) -> int:
    """The server's open-streams gauge, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    for line in body.splitlines():
        if line.startswith("liveresource_open_streams "):
            return int(float(line.split()[1]))
    raise RuntimeError("no liveresource_open_streams in /metrics")
