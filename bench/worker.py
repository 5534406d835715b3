"""Inside a load process: prepare a slice, wait for the release, fire every call at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.jobs import Grab, GrabRecord, Job, WorkerResult
from client_sdk.tokens import mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc

READY = "ready"
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def serve(conn: Connection, release: Event) -> None:
    """Process entry point: run jobs from `conn` until it sends None or goes away.

    Ctrl-C is the parent's to handle: it stops the servers and then these processes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(conn, release))


async def _serve(conn: Connection, release: Event) -> None:
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            result = await _run(job, conn, release)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            raise
        conn.send(("result", result))


async def _run(job: Job, conn: Connection, release: Event) -> WorkerResult:
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        for target in job.all_targets
        for _ in range(job.channels)
    ]
    try:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 30) for c in channels))
        calls = _noop_calls(job, channels) if job.kind == "noop" else _grab_calls(job, channels)
        conn.send((READY, None))
        _wait_for_release(release)
        cpu0, started = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*calls)
        finished = time.perf_counter()
        out = WorkerResult(started=started, finished=finished, cpu_s=time.process_time() - cpu0)
        statuses: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        for latencies, record in results:
            out.latencies_s.extend(latencies)
            statuses.update(record.statuses)
            outcomes.update(o for o in record.outcomes if o)
            if job.kind == "grab":
                out.grabs.append(record)
        out.statuses, out.outcomes = dict(statuses), dict(outcomes)
        return out
    finally:
        for channel in channels:
            await channel.close()


def _wait_for_release(release: Event) -> None:
    """Block (the loop too, on purpose: nothing else runs) until released; exit if orphaned."""
    parent = multiprocessing.parent_process()
    while not release.wait(1.0):
        if parent is not None and not parent.is_alive():
            raise SystemExit("the bench process is gone")


_Coro = Coroutine[Any, Any, tuple[list[float], GrabRecord]]
"""One call (or a grab with its retry): its latencies and what it got back."""


def _noop_calls(job: Job, channels: list[grpc.aio.Channel]) -> list[_Coro]:
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    return [_check(stubs[i % len(stubs)], job) for i in range(job.noop_calls)]


def _grab_calls(job: Job, channels: list[grpc.aio.Channel]) -> list[_Coro]:
    stubs = [svc_grpc.ResourceAllocationServiceStub(c) for c in channels]
    n = len(job.all_targets)
    tokens: dict[str, tuple[tuple[str, str], ...]] = {}
    for grab in job.grabs:
        if grab.viewer_id not in tokens:
            token = mint_token(grab.viewer_id, "viewer", key=job.token_key)
            tokens[grab.viewer_id] = (("authorization", f"Bearer {token}"),)
    return [
        _allocate(
            [stubs[c] for c in route(i, n, job.channels, job.attempts)],
            grab,
            tokens[grab.viewer_id],
            job,
        )
        for i, grab in enumerate(job.grabs)
    ]


def route(i: int, targets: int, per_target: int, attempts: int) -> list[int]:
    """The channel of each attempt of grab i, channels being `per_target` per target in
    order: grab i goes to target i % targets (its channels in turn), attempt k to the k-th
    target after that one, so a retry never lands on the process of the attempt before."""
    return [(i + k) % targets * per_target + i // targets % per_target for k in range(attempts)]


async def _check(stub: health_pb2_grpc.HealthStub, job: Job) -> tuple[list[float], GrabRecord]:
    t0 = time.perf_counter()
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=job.timeout_s)
        status, outcome = "OK", health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.aio.AioRpcError as exc:
        status, outcome = exc.code().name, ""
    return [time.perf_counter() - t0], GrabRecord("", "", "", (status,), (outcome,), ("",))


async def _allocate(
    stubs: list[svc_grpc.ResourceAllocationServiceStub],
    grab: Grab,
    metadata: tuple[tuple[str, str], ...],
    job: Job,
) -> tuple[list[float], GrabRecord]:
    request = svc.AllocateRequest(request_id=str(uuid.uuid4()), pool_id=grab.pool_id)
    latencies: list[float] = []
    statuses: list[str] = []
    outcomes: list[str] = []
    codes: list[str] = []
    for stub in stubs:  # one per attempt
        t0 = time.perf_counter()
        try:
            reply = await stub.Allocate(request, metadata=metadata, timeout=job.timeout_s)
            statuses.append("OK")
            outcomes.append(svc.AllocationOutcome.Name(reply.outcome))
            codes.append(reply.coupon.code if reply.HasField("coupon") else "")
        except grpc.aio.AioRpcError as exc:
            statuses.append(exc.code().name)
            outcomes.append("")
            codes.append("")
        latencies.append(time.perf_counter() - t0)
    record = GrabRecord(
        grab.viewer_id,
        grab.pool_id,
        request.request_id,
        tuple(statuses),
        tuple(outcomes),
        tuple(codes),
    )
    return latencies, record
