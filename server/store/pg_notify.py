"""Cross-process commit notifications on PostgreSQL: LISTEN/NOTIFY on the outbox.

Every transaction that appends room events also runs `pg_notify` for each room it touched;
PostgreSQL delivers the notification only when (and if) the transaction commits, in commit
order. Each server process keeps one connection LISTENing and hands what it hears to the
store's commit listeners, so a room subscriber on process A hears of a change committed
through process B as it would of its own. A lost connection is re-established with backoff;
since notifications sent meanwhile are gone, `on_reconnect` lets the listener's owner re-read
what it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "liveresource_room_events"


def payload(room_id: str, sequence: int, lifecycle: bool) -> str:
    """The notification text for a room's events committed up to `sequence`."""
    return f"{room_id} {sequence} {int(lifecycle)}"


def parse(text: str) -> tuple[str, int, bool] | None:
    """(room_id, sequence, lifecycle) from a notification, or None if it is not ours."""
    parts = text.split(" ")
    if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in ("0", "1"):
        return None
    return parts[0], int(parts[1]), parts[2] == "1"


def libpq_dsn(sqlalchemy_url: str) -> str:
    """A SQLAlchemy `postgresql+asyncpg://` URL as asyncpg's own DSN."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else sqlalchemy_url


class NotificationListener:
    """One LISTENing connection per process, kept open until `close()`."""

    def __init__(
        self,
        dsn: str,
        on_commit: Callable[[str, int, bool], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._dsn = dsn
        self._on_commit = on_commit
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the first connection listens (10 s at most)."""
        self._task = asyncio.create_task(self._run(), name="pg-notify-listener")
        await asyncio.wait_for(self._connected.wait(), 10.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._heard)
                delay = 0.1
                self._connected.set()
                if not first:
                    log.warning("LISTEN connection re-established; re-reading watched rooms")
                    self._on_reconnect()
                first = False
                await lost.wait()
                log.warning("LISTEN connection lost; reconnecting")
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))

    def _heard(self, _conn: object, _pid: int, _channel: str, text: str) -> None:
        parsed = parse(text)
        if parsed is None:
            log.warning("ignoring a notification that is not ours: %r", text[:100])
            return
        self._on_commit(*parsed)
