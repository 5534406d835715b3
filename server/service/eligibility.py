"""Decides who may grab from pools with an eligibility rule, for Allocate and room streams.

A pool's rule and its room's streamer and linked shops never change once created, so they
are read from the store once (once for all the grabs that ask at the same time) and kept
(bounded); a pool without a rule costs a dict lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from server.domain import eligibility as rules
from server.domain.eligibility import Eligibility, Missing, PoolEligibility
from server.domain.models import AllocationResult, Outcome, Pool, Principal, Role
from server.service.context import ServiceContext
from server.service.single_flight import SingleFlight
from server.service.watch import WatchJournal, WatchTracker
from server.store.interface import IdempotencyKey

_CACHE = 100_000


def _bounded_put(cache: OrderedDict[str, Any], key: str, value: object) -> None:
    # OrderedDict evicts in O(1); a dict's next(iter()) walks the holes evictions leave.
    if len(cache) >= _CACHE:
        cache.popitem(last=False)
    cache[key] = value


class EligibilityDesk:
    """Eligibility of viewers for pools, from their token's facts and their watch time."""

    def __init__(
        self, ctx: ServiceContext, watch: WatchTracker, journal: WatchJournal | None = None
    ) -> None:
        self._ctx = ctx
        self.watch = watch
        self._journal = journal
        """Set when other processes share the database: their viewers' sessions count too."""
        self._rules: OrderedDict[str, tuple[Eligibility, str] | None] = OrderedDict()
        self._rooms: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()
        # A stampede on a pool not cached yet reads it once, not once per grab.
        self._rule_loads: SingleFlight[str, tuple[Eligibility, str] | None] = SingleFlight()
        self._room_loads: SingleFlight[str, tuple[str, frozenset[str]]] = SingleFlight()

    async def _rule(self, pool_id: str) -> tuple[Eligibility, str] | None:
        if pool_id in self._rules:
            return self._rules[pool_id]
        return await self._rule_loads.do(pool_id, lambda: self._load_rule(pool_id))

    async def _load_rule(self, pool_id: str) -> tuple[Eligibility, str] | None:
        async with self._ctx.store.transaction(write=False) as tx:
            pool = await tx.get_pool(pool_id)
        if pool is None:
            return None  # not cached: Allocate answers NOT_FOUND, and it may be created later
        found = (pool.eligibility, pool.room_id) if pool.eligibility.restricts else None
        _bounded_put(self._rules, pool_id, found)
        return found

    async def _room(self, room_id: str) -> tuple[str, frozenset[str]]:
        known = self._rooms.get(room_id)
        if known is None:
            known = await self._room_loads.do(room_id, lambda: self._load_room(room_id))
        return known

    async def _load_room(self, room_id: str) -> tuple[str, frozenset[str]]:
        async with self._ctx.store.transaction(write=False) as tx:
            room = await tx.get_room(room_id)
        assert room is not None, "a pool's room is never deleted"
        known = (room.streamer_id, frozenset(s.shop_id for s in room.linked_shops))
        _bounded_put(self._rooms, room_id, known)
        return known

    async def _missing(
        self, principal: Principal, rule: Eligibility, room_id: str
    ) -> tuple[Missing, ...]:
        streamer_id, shops = await self._room(room_id)
        watched = self.watch.watched(room_id, principal.subject)
        if (
            self._journal is not None
            and rule.min_watch_time is not None
            and watched < rule.min_watch_time
        ):
            watched = max(watched, await self._journal.watched(room_id, principal.subject))
        return rules.missing(rule, principal.facts, streamer_id, shops, watched, self._ctx.clock())

    def may_restrict(self, pool_id: str) -> bool:
        """False when the pool is known to let every viewer grab (the grab's fast path)."""
        return pool_id not in self._rules or self._rules[pool_id] is not None

    async def refusal(
        self, principal: Principal, key: IdempotencyKey, pool_id: str
    ) -> AllocationResult | None:
        """NOT_ELIGIBLE if the viewer may not grab from the pool now, else None.

        Not recorded, so a retry is decided afresh; a request_id that was already granted
        keeps its grant (the recorded answer is returned instead).
        """
        found = await self._rule(pool_id)
        if found is None or principal.role is not Role.VIEWER:
            return None
        missing = await self._missing(principal, *found)
        if not missing:
            return None
        async with self._ctx.store.transaction(write=False) as tx:
            recorded = await tx.get_answer(key.subject, key.request_id)
        if recorded is not None and recorded.method == key.method:
            return None  # the grab path replays it (or refuses a reused request_id)
        return AllocationResult(
            outcome=Outcome.NOT_ELIGIBLE,
            remaining_quantity=0,
            server_time=self._ctx.clock(),
            missing=missing,
        )

    async def for_pools(
        self, principal: Principal, pools: Iterable[Pool]
    ) -> tuple[PoolEligibility, ...]:
        """The viewer's eligibility for each of `pools` that has a rule (none for others)."""
        if principal.role is not Role.VIEWER:
            return ()
        out: list[PoolEligibility] = []
        for pool in pools:
            if pool.eligibility.restricts:
                missing = await self._missing(principal, pool.eligibility, pool.room_id)
                out.append(PoolEligibility(pool.pool_id, missing))
        return tuple(out)
