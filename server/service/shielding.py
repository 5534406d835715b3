"""Store work that must finish even when the call that started it is cancelled.

A client that cancels (or whose deadline passes) cancels its handler. Cancelling a task in
the middle of a store transaction makes SQLAlchemy discard the connection, and with aiosqlite
that close can hang the process at shutdown. So units of work run in their own task: the
caller stops waiting at once, the transaction commits or rolls back normally, and a retry
with the same request_id finds the recorded answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def _forget(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("work finished after its caller left: %r", task.exception())


async def finish_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Await `work` in its own task; if the caller is cancelled, the work still completes."""
    task = asyncio.ensure_future(work)
    _running.add(task)
    task.add_done_callback(_forget)
    return await asyncio.shield(task)


async def drain(seconds: float) -> None:
    """Wait (up to `seconds`) for work whose callers left; used at shutdown."""
    pending = [t for t in _running if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=seconds)
