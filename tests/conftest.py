"""Fixtures: a real liveresource server on a loopback port (port 0) and SDK clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from client_sdk import AsyncLiveResourceClient, ClientConfig, RetryPolicy, mint_token
from server.app import RunningServer, start_server
from server.config import Settings
from server.service.clock import utc_now
from server.store.interface import Store
from tests.support import TOKEN_KEY, room_message, unique

logging.getLogger("liveresource.calls").setLevel(logging.WARNING)


@dataclass
class MovableClock:
    """Real time plus an offset that tests can move forward."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class ServerHandle:
    """A running server and how to reach it."""

    running: RunningServer
    settings: Settings
    clock: MovableClock

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "token_key": TOKEN_KEY,
        "heartbeat_seconds": 0.5,
        "shutdown_grace_seconds": 1.0,
        "sqlite_synchronous": "NORMAL",
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def launch(
    data_dir: Path, *, wrap_store: Callable[[Store], Store] | None = None, **overrides: object
) -> ServerHandle:
    """Start a server on a free loopback port (settings overridden by keyword)."""
    clock = MovableClock()
    settings = settings_for(data_dir, **overrides)
    if wrap_store is None:
        running = await start_server(settings, clock=clock)
    else:
        running = await start_server(settings, clock=clock, wrap_store=wrap_store)
    return ServerHandle(running, settings, clock)


@pytest.fixture(scope="session")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerHandle]:
    """One server for the whole session (tests use unique room ids)."""
    handle = await launch(tmp_path_factory.mktemp("server"))
    yield handle
    await handle.running.stop(1.0)


ClientFactory = Callable[..., AsyncLiveResourceClient]


def _factory(
    created: list[AsyncLiveResourceClient],
) -> Callable[..., AsyncLiveResourceClient]:
    def make(
        role: str,
        subject: str,
        *,
        target: str,
        retry: RetryPolicy | None = None,
        token: str | None = None,
    ) -> AsyncLiveResourceClient:
        config = ClientConfig(
            target=target,
            token=token if token is not None else mint_token(subject, role, key=TOKEN_KEY),
            retry=retry or RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.1),
        )
        client = AsyncLiveResourceClient(config)
        created.append(client)
        return client

    return make


@pytest.fixture
async def clients(server: ServerHandle) -> AsyncIterator[ClientFactory]:
    """`clients(role, subject)`: an SDK client of the session server, closed after the test."""
    created: list[AsyncLiveResourceClient] = []
    make = _factory(created)

    def bound(role: str, subject: str, **kwargs: object) -> AsyncLiveResourceClient:
        kwargs.setdefault("target", server.target)
        return make(role, subject, **kwargs)  # type: ignore[arg-type]

    yield bound
    for client in created:
        await client.close()


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., AsyncLiveResourceClient]]:
    """Like `clients`, but the test names the target (for servers it starts itself)."""
    created: list[AsyncLiveResourceClient] = []
    yield _factory(created)
    for client in created:
        await client.close()


@dataclass
class RoomFixture:
    """A registered room and its streamer's client."""

    room_id: str
    streamer_id: str
    streamer: AsyncLiveResourceClient


RoomMaker = Callable[[], Awaitable[RoomFixture]]


@pytest.fixture
async def make_room(clients: ClientFactory) -> RoomMaker:
    """Registers a new room with a new streamer."""
    platform = clients("platform", "platform-tests")

    async def make() -> RoomFixture:
        room_id, streamer_id = unique("room"), unique("streamer")
        await platform.register_room(room_message(room_id, streamer_id))
        return RoomFixture(room_id, streamer_id, clients("streamer", streamer_id))

    return make
