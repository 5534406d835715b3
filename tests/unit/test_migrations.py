"""The Alembic migrations create exactly the schema the code declares, on SQLite and PostgreSQL
alike (the `backend` parameter); the constraints themselves are exercised in test_store_sql."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.store.migrate import alembic_config, upgrade_to_head
from server.store.schema import metadata


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


def _diff(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrations_match_the_declared_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_to_head)
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == [], f"migrations and server/store/schema.py disagree: {diff}"


async def test_migrations_are_idempotent_at_head(engine: AsyncEngine) -> None:
    for _ in range(2):
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)
    async with engine.connect() as conn:
        version = (
            await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
        ).scalar_one()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
