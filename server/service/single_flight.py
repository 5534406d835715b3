"""One load per key at a time: callers that ask while a load runs share its result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Coalesces concurrent loads of the same key (a stampede on a pool not yet cached
    would otherwise read it once per caller). Results are not kept: the caller caches."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def do(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The result of `load()`, run once for every caller that asks while it runs.
        A caller that is cancelled leaves the load running for the others."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(load())
            self._running[key] = running
            running.add_done_callback(lambda done: self._forget(key, done))
        # A shield whose caller left retrieves the load's exception itself: a load that
        # failed after all its callers left leaves no "never retrieved" warning.
        return await asyncio.shield(running)

    def _forget(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
