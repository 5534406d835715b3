"""The Alembic migrations create exactly the schema the code declares, on SQLite and PostgreSQL
alike (the `backend` parameter); the constraints themselves are exercised in test_store_sql."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
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


def _upgrade(conn: Connection, revision: str) -> None:
    command.upgrade(alembic_config(conn), revision)


async def test_0003_keeps_redemptions_and_numbers_existing_grants(engine: AsyncEngine) -> None:
    """Data written before 0003 survives it: redemptions keep their state, and coupons get
    their place in their pool's grants in the order they were granted."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, "0002")
        await conn.execute(
            text(
                "INSERT INTO rooms (room_id, streamer_id, currency_code, catalogue, created_at_us)"
                " VALUES ('r', 's', 'CNY', '{}', 0)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO pools (pool_id, room_id, title, terms, target, currency_code,"
                " total_quantity, remaining_quantity, granted_quantity, withdrawn_quantity,"
                " per_viewer_limit, claim_start_us, valid_for_s, version, created_at_us,"
                " updated_at_us, announced_state) VALUES ('p', 'r', 't', '{}', '{}', 'CNY',"
                " 5, 2, 3, 0, 1, 0, 60, 1, 0, 0, 'open')"
            )
        )
        for coupon_id, at in (("c-b", 20), ("c-a", 10), ("c-c", 20)):
            await conn.execute(
                text(
                    "INSERT INTO coupons (coupon_id, code, pool_id, room_id, viewer_id,"
                    " request_id, slot, per_viewer_limit, valid_from_us, valid_until_us,"
                    " redeemed_order_id) VALUES (:id, :id, 'p', 'r', :id, 'q', 1, 1, :at,"
                    " 999999, :order)"
                ),
                {"id": coupon_id, "at": at, "order": "o-1" if coupon_id == "c-a" else None},
            )
        await conn.execute(
            text(
                "INSERT INTO redemptions (order_id, coupon_id, fingerprint,"
                " eligible_subtotal_minor, discount_minor, redeemed_at_us, released_at_us)"
                " VALUES ('o-1', 'c-a', 'f', 100, 10, 30, NULL),"
                " ('o-0', 'c-b', 'f', 100, 10, 25, 28)"
            )
        )
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_to_head)
    async with engine.connect() as conn:
        seqs = dict((await conn.execute(text("SELECT coupon_id, grant_seq FROM coupons"))).all())
        states = (
            await conn.execute(
                text(
                    "SELECT order_id, state, confirmed_at_us, release_reason FROM redemptions"
                    " ORDER BY order_id"
                )
            )
        ).all()
    assert seqs == {"c-a": 1, "c-b": 2, "c-c": 3}
    assert [tuple(r) for r in states] == [
        ("o-0", "released", 25, "order_cancelled"),
        ("o-1", "confirmed", 30, None),
    ]
