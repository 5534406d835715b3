"""Throw-away PostgreSQL databases for the tests that run against PostgreSQL.

Each database is named `lr_test_<random hex>` and created on the server of
`LIVERESOURCE_TEST_PG_URL` (default postgresql://postgres@127.0.0.1:5432), then dropped after
its connections were terminated. When no PostgreSQL answers, the PostgreSQL tests are skipped,
unless the environment variable `CI` is set: then they fail, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432"
CONNECT_TIMEOUT = 3.0
PREFIX = "lr_test_"


def server_url() -> str:
    """The PostgreSQL server the tests use (a libpq URL, optionally naming the database to
    connect to for CREATE/DROP DATABASE; `postgres` by default)."""
    return os.environ.get("LIVERESOURCE_TEST_PG_URL") or DEFAULT_SERVER_URL


def _with_database(url: str, database: str, *, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        (scheme or parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment)
    )


def admin_dsn() -> str:
    """Where CREATE/DROP DATABASE are sent: the URL's database, else `postgres`."""
    given = urlsplit(server_url()).path.strip("/")
    return _with_database(server_url(), given or "postgres", scheme="postgresql")


def sqlalchemy_url(database: str) -> str:
    """The store's URL for a database on the test server (asyncpg driver)."""
    return _with_database(server_url(), database, scheme="postgresql+asyncpg")


def libpq_url(database: str) -> str:
    """A plain asyncpg/libpq URL for a database on the test server."""
    return _with_database(server_url(), database, scheme="postgresql")


_answered: bool | None = None
_why = ""


async def _answers() -> bool:
    """Whether PostgreSQL answers (asked once per session)."""
    global _answered, _why
    if _answered is None:
        try:
            conn = await asyncpg.connect(admin_dsn(), timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            _answered, _why = False, f"{type(exc).__name__}: {exc}"
        else:
            await conn.close()
            _answered = True
    return _answered


async def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is not there; fail it instead when CI is set."""
    if await _answers():
        return
    message = f"PostgreSQL at {admin_dsn()} does not answer ({_why})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: PostgreSQL tests must run", pytrace=False)
    pytest.skip(f"{message}; set CI to make this a failure")


async def create_database() -> str:
    """Create an empty, uniquely named database; returns its name."""
    name = PREFIX + secrets.token_hex(6)
    conn = await asyncpg.connect(admin_dsn(), timeout=CONNECT_TIMEOUT)
    try:
        # asyncpg runs a statement outside any transaction unless told otherwise, which
        # CREATE DATABASE needs (it cannot run inside a transaction block).
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    """Terminate whatever is still connected to the database, then drop it."""
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    conn = await asyncpg.connect(admin_dsn(), timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class Databases:
    """Creates test databases on demand and drops every one of them at `drop_all()`."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def new_url(self) -> str:
        """A fresh database's SQLAlchemy URL (asyncpg)."""
        await require_postgres()
        name = await create_database()
        self.names.append(name)
        return sqlalchemy_url(name)

    async def drop_all(self) -> None:
        while self.names:
            await drop_database(self.names.pop())
