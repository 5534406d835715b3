"""Creates the PostgreSQL database of a store URL if it does not exist yet (`make run-pg`).

    python scripts/create_pg_database.py postgresql+asyncpg://postgres@127.0.0.1:5432/liveresource

It connects to the server's `postgres` database with the URL's user and password. The
schema itself is created by the server's migrations when it starts.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from sqlalchemy.engine import make_url


async def ensure_database(url: str) -> bool:
    """Create the URL's database unless it exists; True if it was created."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "postgresql" or not name:
        raise SystemExit(f"not a PostgreSQL URL with a database name: {url}")
    admin = parsed.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            # asyncpg runs this outside a transaction, as CREATE DATABASE requires.
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created meanwhile by someone else
        return True
    finally:
        await conn.close()


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    created = asyncio.run(ensure_database(argv[0]))
    safe = make_url(argv[0]).render_as_string(hide_password=True)
    print(f"{'created' if created else 'found'} database of {safe}")


if __name__ == "__main__":
    main(sys.argv[1:])
