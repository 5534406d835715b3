"""Background work: announce windows that opened or ended, and prune old room events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from server.domain.models import EventDraft, Pool
from server.domain.pools import due_transitions
from server.service.context import ServiceContext

log = logging.getLogger(__name__)


class LifecycleTicker:
    """Announces, as room events, the pool transitions that only the clock causes.

    Sleeps until the next due transition (at most `max_sleep`, so changes made by other
    processes are picked up), and is poked awake when a pool is configured here.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        max_sleep: float = 1.0,
        on_change: Callable[[str], None] = lambda pool_id: None,
    ) -> None:
        self._ctx = ctx
        self._on_change = on_change
        self._max_sleep = max_sleep
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Re-check now (a pool was created or changed)."""
        self._wake.set()

    async def tick(self) -> float:
        """Announce what is due; return how long to sleep before the next check."""
        store, now = self._ctx.store, self._ctx.clock()
        async with store.transaction(write=False) as tx:
            due = await tx.pools_due(now)
            upcoming = await tx.next_due()
        if due:
            async with store.transaction(write=True) as tx:
                changed = await tx.pools_due(now)
                announced: list[Pool] = []
                drafts: dict[str, list[EventDraft]] = {}
                for pool in changed:
                    after, events = due_transitions(pool, now)
                    announced.append(after)
                    drafts.setdefault(pool.room_id, []).extend(events)
                await tx.update_pools(announced)
                # All rooms at once: on PostgreSQL their rows are locked in room order, as
                # every other writer locks them, so the ticker cannot deadlock with a batch.
                await tx.append_events_many(drafts, lambda: now)
                upcoming = await tx.next_due()
            for pool in changed:
                self._on_change(pool.pool_id)
        if upcoming is None:
            return self._max_sleep
        return min(self._max_sleep, max(0.0, (upcoming - self._ctx.clock()).total_seconds()))

    async def run(self) -> None:
        """Tick until cancelled; errors are logged and retried, never fatal."""
        while True:
            try:
                delay = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lifecycle tick failed; retrying")
                delay = self._max_sleep
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)


async def prune_forever(ctx: ServiceContext, retention: timedelta, every: float = 60.0) -> None:
    """Delete room events older than the retention window, every `every` seconds."""
    while True:
        try:
            removed = await ctx.store.prune_events(ctx.clock() - retention)
            if removed:
                log.info("pruned %d room events older than %s", removed, retention)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning room events failed; retrying")
        await asyncio.sleep(every)
