"""Inside a load process: prepare a slice, wait for the release, fire every call at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
import traceback
import uuid
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2

from bench.jobs import Grab, GrabRecord, Job, WorkerResult
from client_sdk.tokens import mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc

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
        answers = await asyncio.gather(*(call.run() for call in calls))
        finished = time.perf_counter()
        out = WorkerResult(started=started, finished=finished, cpu_s=time.process_time() - cpu0)
        # Answers are parsed after the clock stopped, for every scenario alike: the load
        # processes share the cores with the server, and their own work is not its cost.
        statuses: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        for call, latencies in zip(calls, answers, strict=True):
            out.latencies_s.extend(latencies)
            record = call.record()
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


_CHECK = "/grpc.health.v1.Health/Check"
_ALLOCATE = "/liveresource.v1.ResourceAllocationService/Allocate"
_CHECK_REQUEST = health_pb2.HealthCheckRequest().SerializeToString()
_Method: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"
"""Bytes in, bytes out: no serializers."""

_TOKENS: dict[str, tuple[tuple[str, str], ...]] = {}
"""Each viewer's bearer metadata, kept across jobs as an app keeps its token: the viewers of
`hot` tapping again in `soldout` present the tokens the server has already seen."""
_TOKENS_KEPT = 200_000


class _Call:
    """One call, or a grab with its retry: request bytes built before the release, answers
    kept as bytes and parsed only in `record`, after the clock stopped."""

    __slots__ = ("answers", "grab", "metadata", "methods", "request", "request_id", "timeout")

    def __init__(
        self,
        methods: list[_Method],
        request: bytes,
        metadata: tuple[tuple[str, str], ...] | None,
        timeout: float,
        grab: Grab | None = None,
        request_id: str = "",
    ) -> None:
        self.methods = methods
        self.request = request
        self.metadata = metadata
        self.timeout = timeout
        self.grab = grab
        self.request_id = request_id
        self.answers: list[bytes | grpc.StatusCode] = []

    async def run(self) -> list[float]:
        latencies: list[float] = []
        for method in self.methods:  # one per attempt
            t0 = time.perf_counter()
            try:
                answer: bytes | grpc.StatusCode = await method(
                    self.request, metadata=self.metadata, timeout=self.timeout
                )
            except grpc.aio.AioRpcError as exc:
                answer = exc.code()
            latencies.append(time.perf_counter() - t0)
            self.answers.append(answer)
        return latencies

    def record(self) -> GrabRecord:
        statuses: list[str] = []
        outcomes: list[str] = []
        codes: list[str] = []
        for answer in self.answers:
            if isinstance(answer, grpc.StatusCode):
                statuses.append(answer.name)
                outcomes.append("")
                codes.append("")
            elif self.grab is None:
                statuses.append("OK")
                status = health_pb2.HealthCheckResponse.FromString(answer).status
                outcomes.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
                codes.append("")
            else:
                reply = svc.AllocateResponse.FromString(answer)
                statuses.append("OK")
                outcomes.append(svc.AllocationOutcome.Name(reply.outcome))
                codes.append(reply.coupon.code if reply.HasField("coupon") else "")
        if self.grab is None:
            return GrabRecord("", "", "", tuple(statuses), tuple(outcomes), tuple(codes))
        return GrabRecord(
            self.grab.viewer_id,
            self.grab.pool_id,
            self.request_id,
            tuple(statuses),
            tuple(outcomes),
            tuple(codes),
        )


def _noop_calls(job: Job, channels: list[grpc.aio.Channel]) -> list[_Call]:
    methods = [c.unary_unary(_CHECK) for c in channels]
    return [
        _Call([methods[i % len(methods)]], _CHECK_REQUEST, None, job.timeout_s)
        for i in range(job.noop_calls)
    ]


def _grab_calls(job: Job, channels: list[grpc.aio.Channel]) -> list[_Call]:
    methods = [c.unary_unary(_ALLOCATE) for c in channels]
    n = len(job.all_targets)
    if len(_TOKENS) > _TOKENS_KEPT:
        _TOKENS.clear()
    calls = []
    for i, grab in enumerate(job.grabs):
        metadata = _TOKENS.get(grab.viewer_id)
        if metadata is None:
            token = mint_token(grab.viewer_id, "viewer", key=job.token_key)
            metadata = _TOKENS[grab.viewer_id] = (("authorization", f"Bearer {token}"),)
        request_id = str(uuid.uuid4())
        request = svc.AllocateRequest(request_id=request_id, pool_id=grab.pool_id)
        calls.append(
            _Call(
                [methods[c] for c in route(i, n, job.channels, job.attempts)],
                request.SerializeToString(),
                metadata,
                job.timeout_s,
                grab,
                request_id,
            )
        )
    return calls


def route(i: int, targets: int, per_target: int, attempts: int) -> list[int]:
    """The channel of each attempt of grab i, channels being `per_target` per target in
    order: grab i goes to target i % targets (its channels in turn), attempt k to the k-th
    target after that one, so a retry never lands on the process of the attempt before."""
    return [(i + k) % targets * per_target + i // targets % per_target for k in range(attempts)]
