"""`python -m server --processes N`: N processes on one port, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk import AsyncLiveResourceClient, ClientConfig, mint_token
from tests.integration.test_multiprocess import pg_url  # noqa: F401  (a fixture)
from tests.integration.test_process import free_port
from tests.support import TOKEN_KEY, fixed_pool, room_message, unique

REPO = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LIVERESOURCE_TOKEN_KEY=TOKEN_KEY)
    return subprocess.Popen(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--data-dir", str(tmp_path), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "supervisor.log").open("ab"),
    )


async def _serving(target: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
        assert time.monotonic() < deadline, "not serving"
        await asyncio.sleep(0.2)


def _listening(pid: int, port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        for c in psutil.Process(pid).net_connections()
    )


async def test_three_processes_share_the_port_and_stop_together(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    port = free_port()
    supervisor = _start(tmp_path, "--port", str(port), "--database-url", pg_url, "--processes", "3")
    target = f"127.0.0.1:{port}"
    try:
        await _serving(target)
        deadline = time.monotonic() + 30
        while True:
            children = psutil.Process(supervisor.pid).children()
            if len(children) == 3 and all(_listening(c.pid, port) for c in children):
                break
            assert time.monotonic() < deadline, "three processes never all listened"
            await asyncio.sleep(0.2)

        # Grabs through the shared port, on connections the kernel spreads over the three.
        room_id, streamer_id = unique("room"), unique("streamer")
        platform = AsyncLiveResourceClient(
            ClientConfig(target=target, token=mint_token("p", "platform", key=TOKEN_KEY))
        )
        streamer = AsyncLiveResourceClient(
            ClientConfig(target=target, token=mint_token(streamer_id, "streamer", key=TOKEN_KEY))
        )
        await platform.register_room(room_message(room_id, streamer_id))
        pool = (
            await streamer.configure_resources(room_id, create_pool=fixed_pool(room_id, total=5))
        ).pool
        viewers = [
            AsyncLiveResourceClient(
                ClientConfig(target=target, token=mint_token(f"s-{i}", "viewer", key=TOKEN_KEY))
            )
            for i in range(12)
        ]
        answers = await asyncio.gather(*(v.allocate(pool.pool_id) for v in viewers))
        assert sum(a.HasField("coupon") for a in answers) == 5
        for client in (platform, streamer, *viewers):
            await client.close()

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


async def test_several_processes_on_sqlite_are_refused(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--port", str(free_port()), "--processes", "2")
    assert proc.wait(30) != 0
    assert "needs a PostgreSQL" in (tmp_path / "supervisor.log").read_text()
