"""The server as its own process: SIGTERM drains and ends streams, state survives a restart,
and a subscription resumes on the new process without gap or duplicate (on SQLite and on
PostgreSQL, through the `backend` parameter)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk import AsyncLiveResourceClient, ClientConfig, RetryPolicy, mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from tests.support import TOKEN_KEY, fixed_pool, room_message, unique


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m server` on a fixed loopback port and data folder (and database, if given)."""

    def __init__(self, data_dir: Path, port: int, *, database_url: str = "") -> None:
        self.data_dir = data_dir
        self.port = port
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full pipe
        # would block the server's logging.
        self.log_path = data_dir.parent / f"server-{port}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, env_key: bool = True) -> None:
        env = dict(os.environ)
        if env_key:
            env["LIVERESOURCE_TOKEN_KEY"] = TOKEN_KEY
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *(["--database-url", self.database_url] if self.database_url else []),
                "--heartbeat-seconds",
                "0.5",
                "--shutdown-grace-seconds",
                "2",
                *(self.extra_args or ["--metrics-port", "0"]),
                "--log-level",
                os.environ.get("LR_TEST_LOG", "WARNING"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("ab"),
        )

    async def wait_serving(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.stderr()
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                await asyncio.sleep(0.1)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the server logs its tasks' stacks
            time.sleep(1)
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server ignored SIGTERM: {self.stderr()}") from None

    def stderr(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server_process(tmp_path: Path, backend: str, database_url: str) -> Iterator[ServerProcess]:
    # On SQLite the server uses its default, the file in its data folder, as `make run` does.
    url = database_url if backend == "postgres" else ""
    proc = ServerProcess(tmp_path / "data", free_port(), database_url=url)
    yield proc
    proc.kill()


def client(target: str, role: str, subject: str) -> AsyncLiveResourceClient:
    return AsyncLiveResourceClient(
        ClientConfig(
            target=target,
            token=mint_token(subject, role, key=TOKEN_KEY),
            retry=RetryPolicy(max_attempts=30, initial_backoff=0.05, max_backoff=0.3),
        )
    )


async def items(
    sub: AsyncIterator[svc.StreamAllocationInfoResponse], n: int, timeout: float = 20.0
) -> list[svc.StreamAllocationInfoResponse]:
    it = aiter(sub)
    return [await asyncio.wait_for(anext(it), timeout) for _ in range(n)]


async def test_sigterm_ends_streams_and_state_survives_restart_with_exact_resume(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await server_process.wait_serving()
    target = server_process.target
    room_id, streamer_id = unique("room"), unique("streamer")
    platform = client(target, "platform", "platform")
    streamer = client(target, "streamer", streamer_id)
    viewer = client(target, "viewer", "restart-viewer")
    try:
        await platform.register_room(room_message(room_id, streamer_id))
        pool = (
            await streamer.configure_resources(room_id, create_pool=fixed_pool(room_id, total=5))
        ).pool
        first = (await viewer.allocate(pool.pool_id)).coupon

        sdk_sub = viewer.subscribe(room_id)
        (snapshot,) = await items(sdk_sub, 1)
        assert snapshot.snapshot.pools[0].remaining_quantity == 4
        seen_through = snapshot.snapshot.sequence

        async with grpc.aio.insecure_channel(target) as channel:
            raw = svc_grpc.ResourceAllocationServiceStub(channel).StreamAllocationInfo(
                svc.StreamAllocationInfoRequest(room_id=room_id),
                metadata=(
                    ("authorization", "Bearer " + mint_token("raw", "viewer", key=TOKEN_KEY)),
                ),
            )
            await raw.read()
            assert server_process.terminate() == 0
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    message = await raw.read()
                    assert message is not grpc.aio.EOF, "stream ended without a status"
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE

        server_process.start()
        await server_process.wait_serving()
        # State survived: the coupon granted before the restart is still the viewer's.
        assert [c.code async for c in viewer.iter_coupons()] == [first.code]
        second = await client(target, "viewer", "restart-viewer-2").allocate(pool.pool_id)
        assert second.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        # The SDK subscription reconnected by itself and resumed right after what it saw.
        (event,) = await items(sdk_sub, 1)
        assert event.WhichOneof("payload") == "event"
        assert event.event.sequence == seen_through + 1
        assert event.event.stock_changed.remaining_quantity == 3
        assert sdk_sub.reconnects >= 1
        await sdk_sub.aclose()
        assert server_process.terminate() == 0
    finally:
        for c in (platform, streamer, viewer):
            await c.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_the_server_runs_on_either_event_loop(
    tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m server --event-loop X` says which loop it runs and serves on it: a room, a
    pool, a grant and its replay, a stream's snapshot, and a clean SIGTERM."""
    monkeypatch.setenv("LR_TEST_LOG", "INFO")
    proc = ServerProcess(tmp_path / "data", free_port())
    proc.extra_args = ["--metrics-port", "0", "--event-loop", loop]
    proc.start()
    room_id, streamer_id = unique("room"), unique("streamer")
    platform = client(proc.target, "platform", "platform")
    streamer = client(proc.target, "streamer", streamer_id)
    viewer = client(proc.target, "viewer", unique("viewer"))
    try:
        await proc.wait_serving()
        assert f"event loop: {loop}" in proc.stderr()
        await platform.register_room(room_message(room_id, streamer_id))
        created = await streamer.configure_resources(room_id, create_pool=fixed_pool(room_id))
        pool_id = created.pool.pool_id
        request_id = str(uuid.uuid4())
        granted = await viewer.allocate(pool_id, request_id=request_id)
        replayed = await viewer.allocate(pool_id, request_id=request_id)
        assert granted.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        assert replayed.coupon.code == granted.coupon.code
        sub = viewer.subscribe(room_id)
        (snapshot,) = await items(sub, 1)
        assert snapshot.snapshot.pools[0].granted_quantity == 1
        await sub.aclose()
        assert proc.terminate() == 0
    finally:
        for c in (platform, streamer, viewer):
            await c.close()
        proc.kill()
