"""Fixtures: a real liveresource server on a loopback port (port 0) and SDK clients.

Every fixture that needs a database depends on `backend`, a session-scoped parameter, so
each test using one runs twice: on SQLite (the embedded default) and on PostgreSQL (a
throw-away database, see tests/pg.py; skipped without PostgreSQL unless CI is set).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from client_sdk import AsyncLiveResourceClient, ClientConfig, RetryPolicy, mint_token
from server.app import RunningServer, start_server
from server.config import Settings
from server.event_loop import LoopFactory, loop_factory
from server.service.clock import utc_now
from server.store.interface import Store
from tests.pg import Databases
from tests.support import TOKEN_KEY, room_message, unique

logging.getLogger("liveresource.calls").setLevel(logging.WARNING)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, LoopFactory]:
    """Async tests run on the loop `python -m server` runs on (uvloop where installed);
    LIVERESOURCE_EVENT_LOOP=asyncio runs them on asyncio's own, as the server would."""
    factory, name = loop_factory(os.environ.get("LIVERESOURCE_EVENT_LOOP") or "auto")
    return {name.split()[0]: factory}


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
        # Every stock change on the stream, so tests can count them; coalescing has its own.
        "stock_update_interval_seconds": 0.0,
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


BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database the test runs on: "sqlite" or "postgres"."""
    return str(request.param)


@pytest.fixture(scope="session")
async def pg_databases() -> AsyncIterator[Databases]:
    """PostgreSQL databases created during the session, all dropped at its end."""
    databases = Databases()
    yield databases
    await databases.drop_all()


async def fresh_database_url(backend: str, data_dir: Path, databases: Databases) -> str:
    """The URL of a new, empty database of the backend."""
    if backend == "sqlite":
        # What the server uses by default in this data dir.
        return settings_for(data_dir).resolved_database_url()
    return await databases.new_url()


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new, empty database for this test (SQLite file in tmp_path, or PostgreSQL).

    Servers a test starts itself get it as `launch(..., database_url=database_url)`; a
    restarted server given the same URL finds the same data.
    """
    databases = Databases()
    yield await fresh_database_url(backend, tmp_path, databases)
    await databases.drop_all()


@pytest.fixture(scope="session")
async def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, pg_databases: Databases
) -> AsyncIterator[ServerHandle]:
    """One server per backend for the whole session (tests use unique room ids)."""
    data_dir = tmp_path_factory.mktemp(f"server-{backend}")
    url = await fresh_database_url(backend, data_dir, pg_databases)
    handle = await launch(data_dir, database_url=url)
    yield handle
    await handle.running.stop(1.0)


@pytest.fixture
async def clock_server(tmp_path: Path, database_url: str) -> AsyncIterator[ServerHandle]:
    """A server of its own (default settings, watch gap 30 s), so moving its clock affects
    no other test."""
    handle = await launch(tmp_path, database_url=database_url)
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
