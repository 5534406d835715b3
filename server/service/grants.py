"""The batched grab path: refusals answered from memory, grants group-committed by one writer.

Allocate calls queue to a single writer task per process. Each round it takes what has
queued (up to `max_batch`) and decides it in one store transaction: it reads the pools
(locked on PostgreSQL, so batches of several processes take turns on a pool), then the
recorded answers of those request_ids and the viewers' grant counts, decides every grab in
arrival order with the domain rules, writes all grants, answers and room events at once,
commits, and only then answers the callers. While one batch commits the
next one queues, so the commit cost is shared by every grab in it (group commit).

In front of the queue, a grab is refused from memory when that answer cannot turn out wrong:
the pool's committed view says it is closed, not open yet, sold out, or the viewer already
holds the limit, and the request_id has no grant in that pool. Those answers are not written;
a recent-answers cache gives a retry the same answer. The database constraints stay the
backstop for everything written.

When the store is shared with other processes (`shared`, PostgreSQL), this process cannot
know from memory that a request_id has no grant (another process may have granted it), nor
that a pool it saw sold out got no stock since: every grab then goes to the writer, which
decides it on the locked pool row, and refusals are recorded as answers too, so a retry sent
to any process gets the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from server.domain import allocation
from server.domain.errors import (
    DomainError,
    NotFound,
    RequestIdReused,
    Unavailable,
)
from server.domain.models import (
    AllocationResult,
    EventDraft,
    EventKind,
    Outcome,
    Pool,
)
from server.service.context import ServiceContext
from server.service.ids import new_coupon_code, new_coupon_id
from server.service.shielding import finish_even_if_cancelled
from server.service.single_flight import SingleFlight
from server.store import codec
from server.store.interface import IdempotencyKey, NewCoupon, StoredAnswer, Transaction

log = logging.getLogger(__name__)

METHOD = "Allocate"
SLOW_BATCH_S = 0.25
"""A grant batch that takes longer than this is logged (a warning) with where the time went."""
Key = tuple[str, str]  # (viewer_id, request_id)
FrontKey = str
"""A grab's request in the front door's maps: `front_key(viewer_id, request_id)`. A string,
not a tuple: the recent answers keep one per answer, and strings are no work for the
garbage collector (tuples and their collections were a measurable share of a stampede)."""


def front_key(viewer_id: str, request_id: str) -> FrontKey:
    """request_id, "/", viewer_id: a request_id is a UUID (checked), so the first "/" ends it."""
    return request_id + "/" + viewer_id


@dataclass
class PoolView:
    """What this process knows the store has committed about a pool."""

    pool: Pool
    counts: dict[str, int]
    granted: set[FrontKey]


@dataclass
class _Grab:
    key: IdempotencyKey
    pool_id: str
    future: asyncio.Future[AllocationResult]


@dataclass
class _Round:
    """Decisions of one batch, applied to the store and then to memory."""

    now: datetime
    pools: dict[str, Pool]
    counts: dict[Key, int]
    coupons: list[NewCoupon] = field(default_factory=list)
    answers: list[tuple[IdempotencyKey, str]] = field(default_factory=list)
    events: dict[str, list[EventDraft]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    results: list[AllocationResult | DomainError] = field(default_factory=list)


BatchObserver = Callable[[int, float], None]
"""Told (batch size, commit seconds) after each committed batch."""


class GrantDesk:
    """Front door and writer of the batched grab path (one per process)."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        max_batch: int = 512,
        recent_capacity: int = 200_000,
        on_batch: BatchObserver | None = None,
        shared: bool = False,
    ) -> None:
        self._ctx = ctx
        self._shared = shared
        self._max_batch = max_batch
        self._recent_capacity = recent_capacity
        self._on_batch = on_batch
        self._queue: deque[_Grab] = deque()
        self._wake = asyncio.Event()
        self._inflight: dict[FrontKey, _Grab] = {}
        # Oldest first; an OrderedDict evicts in O(1) (a dict's `next(iter())` does not).
        self._recent: OrderedDict[FrontKey, AllocationResult] = OrderedDict()
        self._recent_pools: dict[FrontKey, str] = {}
        """The pool each recent answer was for (a grab's fingerprint), beside it: a pair per
        answer would be one more object for the collector to walk."""
        self._views: dict[str, PoolView] = {}
        self._loading: SingleFlight[str, PoolView | None] = SingleFlight()
        # Bumped by invalidate(): a batch that started before a configuration change must
        # not put its (older) view of the pool back.
        self._epochs: dict[str, int] = {}

    # --- front door -------------------------------------------------------------------

    def answer_now(self, viewer_id: str, request_id: str, pool_id: str) -> AllocationResult | None:
        """The answer if it is known without waiting: the recent answer to this request, or
        a refusal that the pool's committed view proves (sold out, limit reached, not open,
        closed). None: the grab must queue, or the view be loaded. The caller has checked
        the grab (`check_grab`). A grab's fingerprint is its pool_id.

        Most calls of a stampede end here, so it is one flat function: in a server holding
        thousands of calls, each Python call on this path costs far more than in a loop."""
        k = request_id + "/" + viewer_id  # front_key, inline
        recent = self._recent.get(k)
        if recent is not None:
            if self._recent_pools[k] != pool_id:
                raise RequestIdReused()
            return recent
        if self._shared or k in self._inflight:
            return None
        view = self._views.get(pool_id)
        if view is None or k in view.granted:
            return None
        refusal = allocation.refusal(view.pool, view.counts.get(viewer_id, 0), self._ctx.clock())
        if refusal is not None:  # remembered for a retry (inline `_remember`)
            recents, pools = self._recent, self._recent_pools
            if len(recents) >= self._recent_capacity:
                del pools[recents.popitem(last=False)[0]]
            recents[k] = refusal
            pools[k] = pool_id
        return refusal

    async def decide(self, key: IdempotencyKey, pool_id: str) -> AllocationResult:
        """The answer to a checked grab that `answer_now` could not give: the grab already
        in flight, a refusal once the pool's view is loaded, or the grab queued for the
        writer."""
        k = front_key(key.subject, key.request_id)
        pending = self._inflight.get(k)
        if pending is not None:
            if pending.key.fingerprint != key.fingerprint:
                raise RequestIdReused()
            return await asyncio.shield(pending.future)
        if self._shared:
            return await self._enqueue(key, pool_id)
        if pool_id not in self._views:  # else answer_now has just found no refusal
            view = await self._view(pool_id)
            if view is None:
                raise NotFound("pool", pool_id)
            refusal = self.answer_now(key.subject, key.request_id, pool_id)
            if refusal is not None:
                return refusal
        return await self._enqueue(key, pool_id)

    async def _enqueue(self, key: IdempotencyKey, pool_id: str) -> AllocationResult:
        future: asyncio.Future[AllocationResult] = asyncio.get_running_loop().create_future()
        # A caller that left must not leave an unretrieved exception behind.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        grab = _Grab(key, pool_id, future)
        k = front_key(key.subject, key.request_id)
        self._inflight[k] = grab
        self._queue.append(grab)
        self._wake.set()
        try:
            return await asyncio.shield(future)
        finally:
            if future.done() and self._inflight.get(k) is grab:
                del self._inflight[k]

    def invalidate(self, pool_id: str) -> None:
        """Forget the view of a pool whose configuration changed (reloaded on next use)."""
        self._views.pop(pool_id, None)
        self._epochs[pool_id] = self._epochs.get(pool_id, 0) + 1

    def _remember(self, k: FrontKey, fingerprint: str, result: AllocationResult) -> None:
        if len(self._recent) >= self._recent_capacity:
            del self._recent_pools[self._recent.popitem(last=False)[0]]
        self._recent[k] = result
        self._recent_pools[k] = fingerprint

    async def _view(self, pool_id: str) -> PoolView | None:
        view = self._views.get(pool_id)
        if view is not None:
            return view
        # One load per pool however many grabs arrive at once.
        return await self._loading.do(pool_id, lambda: self._load(pool_id))

    async def _load(self, pool_id: str) -> PoolView | None:
        epoch = self._epochs.get(pool_id, 0)
        async with self._ctx.store.transaction(write=False) as tx:
            pool = await tx.get_pool(pool_id)
            keys = await tx.granted_keys(pool_id) if pool is not None else []
        if pool is None:
            return None
        counts: dict[str, int] = {}
        for viewer_id, _ in keys:
            counts[viewer_id] = counts.get(viewer_id, 0) + 1
        view = PoolView(pool, counts, {front_key(v, r) for v, r in keys})
        if self._epochs.get(pool_id, 0) == epoch:
            self._views[pool_id] = view
        return view

    # --- writer -----------------------------------------------------------------------

    async def run(self) -> None:
        """The writer: commit queued grabs batch after batch until cancelled."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            started = time.perf_counter()
            # Finished even if the writer is cancelled, so a batch is never cut mid-commit.
            await finish_even_if_cancelled(self._commit(batch))
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)

    def fail_pending(self, error: DomainError) -> None:
        """Answer every queued grab with `error` (used at shutdown)."""
        while self._queue:
            grab = self._queue.popleft()
            if not grab.future.done():
                grab.future.set_exception(error)

    async def _commit(self, batch: list[_Grab]) -> None:
        epochs = {g.pool_id: self._epochs.get(g.pool_id, 0) for g in batch}
        started = time.perf_counter()
        written = started
        try:
            async with self._ctx.store.transaction(write=True) as tx:
                decided = await self._decide(tx, batch)
                await tx.update_pools([decided.pools[p] for p in sorted(decided.changed)])
                await tx.insert_coupons(decided.coupons)
                await tx.put_answers(decided.answers, decided.now)
                # The last statements before the commit, the events stamped by the store just
                # before their insert: an event's time is when the change was committed, and
                # under load each round trip can wait a while in the event loop's queue.
                await tx.append_events_many(
                    {room: _coalesce(drafts) for room, drafts in decided.events.items()},
                    self._ctx.clock,
                )
                written = time.perf_counter()
        except DomainError as exc:
            self._fail(batch, exc)
            return
        except Exception:
            log.exception("grant batch of %d failed", len(batch))
            self._fail(
                batch,
                Unavailable(
                    "the grant could not be committed; retry with the same request_id",
                    reason="COMMIT_FAILED",
                ),
            )
            return
        done = time.perf_counter()
        if done - started > SLOW_BATCH_S:
            # Its callers and the room's streams waited as long: say where the time went.
            log.warning(
                "grant batch of %d took %.0f ms: %.0f deciding and writing, %.0f committing",
                len(batch),
                (done - started) * 1000,
                (written - started) * 1000,
                (done - written) * 1000,
            )
        self._apply(batch, decided, epochs)

    def _fail(self, batch: list[_Grab], error: DomainError) -> None:
        for grab in batch:
            if not grab.future.done():
                grab.future.set_exception(error)

    async def _decide(self, tx: Transaction, batch: list[_Grab]) -> _Round:
        # The pools first: on PostgreSQL this locks them, so a batch of another process
        # that grabs from them has committed before the answers and counts below are read
        # (a retry it granted is then replayed here, not granted twice).
        pool_ids = sorted({g.pool_id for g in batch})
        pools = {p.pool_id: p for p in await tx.get_pools(pool_ids, for_update=True)}
        recorded = await tx.get_answers([(g.key.subject, g.key.request_id) for g in batch])
        fresh = [g for g in batch if (g.key.subject, g.key.request_id) not in recorded]
        counts = await tx.count_grants_many(sorted({(g.pool_id, g.key.subject) for g in fresh}))
        decided = _Round(now=self._ctx.clock(), pools=pools, counts=counts)
        seen: dict[Key, tuple[str, AllocationResult]] = {}
        for grab in batch:
            decided.results.append(self._decide_one(grab, recorded, seen, decided))
        return decided

    def _decide_one(
        self,
        grab: _Grab,
        recorded: dict[Key, StoredAnswer],
        seen: dict[Key, tuple[str, AllocationResult]],
        decided: _Round,
    ) -> AllocationResult | DomainError:
        k: Key = (grab.key.subject, grab.key.request_id)
        answer = recorded.get(k)
        if answer is not None:
            if answer.method != METHOD or answer.fingerprint != grab.key.fingerprint:
                return RequestIdReused()
            return codec.allocation_from_json(answer.result)
        if k in seen:
            fingerprint, result = seen[k]
            return result if fingerprint == grab.key.fingerprint else RequestIdReused()
        pool = decided.pools.get(grab.pool_id)
        if pool is None:
            return NotFound("pool", grab.pool_id)
        viewer_id = grab.key.subject
        held = decided.counts.get((pool.pool_id, viewer_id), 0)
        refused = allocation.refusal(pool, held, decided.now)
        if refused is not None:
            result = refused
            if self._shared:
                decided.answers.append((grab.key, codec.allocation_to_json(result)))
        else:
            after, coupon, events = allocation.grant(
                pool, viewer_id, new_coupon_id(), new_coupon_code(), decided.now
            )
            decided.pools[pool.pool_id] = after
            decided.counts[(pool.pool_id, viewer_id)] = held + 1
            decided.changed.add(pool.pool_id)
            decided.coupons.append(
                NewCoupon(coupon, grab.key.request_id, held + 1, pool.per_viewer_limit)
            )
            decided.events.setdefault(pool.room_id, []).extend(events)
            result = AllocationResult(
                outcome=Outcome.GRANTED,
                remaining_quantity=after.remaining_quantity,
                server_time=decided.now,
                coupon=coupon,
            )
            decided.answers.append((grab.key, codec.allocation_to_json(result)))
        seen[k] = (grab.key.fingerprint, result)
        return result

    def _apply(self, batch: list[_Grab], decided: _Round, epochs: dict[str, int]) -> None:
        """After the commit: bring the views up to date, then answer every caller."""
        fresh: dict[str, PoolView] = {}
        for pool_id, pool in decided.pools.items():
            view = self._views.get(pool_id)
            if view is not None and self._epochs.get(pool_id, 0) == epochs.get(pool_id):
                view.pool = pool
                fresh[pool_id] = view
        for (pool_id, viewer_id), n in decided.counts.items():
            view = fresh.get(pool_id)
            if view is not None:
                view.counts[viewer_id] = max(view.counts.get(viewer_id, 0), n)
        for new in decided.coupons:
            view = fresh.get(new.coupon.pool_id)
            if view is not None:
                view.granted.add(front_key(new.coupon.viewer_id, new.request_id))
        for grab, result in zip(batch, decided.results, strict=True):
            if isinstance(result, DomainError):
                if not grab.future.done():
                    grab.future.set_exception(result)
                continue
            self._remember(
                front_key(grab.key.subject, grab.key.request_id), grab.key.fingerprint, result
            )
            if not grab.future.done():
                grab.future.set_result(result)


def _coalesce(drafts: list[EventDraft]) -> list[EventDraft]:
    """Within one batch, keep only the last stock change of a run of stock changes."""
    kept: list[EventDraft] = []
    for draft in drafts:
        if (
            kept
            and draft.kind is EventKind.STOCK_CHANGED
            and kept[-1].kind is EventKind.STOCK_CHANGED
            and kept[-1].pool.pool_id == draft.pool.pool_id
        ):
            kept[-1] = draft
        else:
            kept.append(draft)
    return kept
