"""One feed per room with subscribers: knows the newest committed sequence and caches recent
events, so a change is read from the store once per room, not once per subscriber.

The feed also paces what it publishes: a commit with a lifecycle event is published at once,
one with only stock changes at most once per `stock_interval`; and a batch handed to the
room's subscribers keeps only each pool's latest stock change (`coalesce`), computed once per
room and cursor, not once per subscriber."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from server.domain.errors import DomainError
from server.domain.models import EventKind, Pool, RoomEvent
from server.service.shielding import finish_even_if_cancelled
from server.store.interface import EventBounds, Store

log = logging.getLogger(__name__)

SnapshotState = tuple[list[Pool], EventBounds | None]
SnapshotLoader = Callable[[], Awaitable[SnapshotState]]
SNAPSHOT_REUSE_S = 1.0
STOCK_MAX_DEFER_S = 2.0
"""A stock tick waits for the previous one to be written by the room's streams, this long at
most."""
HEARTBEAT_SLOT_S = 0.25
"""Heartbeat deadlines are kept in slots this wide (a heartbeat is at most this late)."""

_FETCH_LIMIT = 500


def coalesce(events: list[RoomEvent]) -> list[RoomEvent]:
    """The events minus each stock change that a later stock change or sell-out of the same
    pool supersedes (a sell-out says the stock is 0: the change to 0 committed with it
    would be a second write to every stream for nothing)."""
    latest: dict[str, int] = {}
    changes = 0
    for index, event in enumerate(events):
        kind = event.kind
        if kind is EventKind.STOCK_CHANGED:
            changes += 1
            latest[event.pool.pool_id] = index
        elif kind is EventKind.POOL_SOLD_OUT:
            latest[event.pool.pool_id] = index
    if changes == sum(1 for i in latest.values() if events[i].kind is EventKind.STOCK_CHANGED):
        return events
    return [
        e
        for i, e in enumerate(events)
        if e.kind is not EventKind.STOCK_CHANGED or latest[e.pool.pool_id] == i
    ]


class _HeartbeatWheel:
    """When each waiting stream of a room is due a heartbeat: its waiter in the slot of its
    deadline, and one timer for the room instead of one per stream (a timer per wait cost a
    heap push and a cancel on every event to every stream). Deadlines stay per stream, so
    heartbeats stay as staggered as the streams' waits."""

    __slots__ = ("_slots", "_timer")

    def __init__(self) -> None:
        self._slots: dict[int, list[asyncio.Future[None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, waiter: asyncio.Future[None], deadline: float) -> None:
        slot = math.ceil(deadline / HEARTBEAT_SLOT_S)
        waiters = self._slots.get(slot)
        if waiters is None:
            self._slots[slot] = [waiter]
            if self._timer is None or slot * HEARTBEAT_SLOT_S < self._timer.when():
                self._arm(slot)
        else:
            waiters.append(waiter)

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(slot * HEARTBEAT_SLOT_S, self._due)

    def _due(self) -> None:
        self._timer = None
        now = math.floor(asyncio.get_running_loop().time() / HEARTBEAT_SLOT_S)
        for slot in [s for s in self._slots if s <= now]:
            for waiter in self._slots.pop(slot):
                if not waiter.done():
                    waiter.set_result(None)
        if self._slots:
            self._arm(min(self._slots))

    def clear(self) -> None:
        """Forget every deadline (their waiters were all woken)."""
        self._slots.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RoomFeed:
    """Recent events of one room. Runs on the event loop; no locking beyond _fill_lock."""

    def __init__(
        self,
        room_id: str,
        store: Store,
        known_last: int,
        capacity: int,
        stock_interval: float = 0.0,
    ) -> None:
        self.room_id = room_id
        self._store = store
        self.known_last = known_last
        """The newest sequence committed (that this process heard of)."""
        self.published = known_last
        """The newest sequence handed to subscribers; lags known_last by at most the interval."""
        self._ring: deque[RoomEvent] = deque(maxlen=capacity)
        # Guards filling the ring, so concurrent subscribers trigger one store read.
        self._fill_lock = asyncio.Lock()
        # One future per waiting stream, woken by the next publish or its own timeout: no
        # task per wait (asyncio.wait_for made one per stream per wait, plus its timer).
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False
        self._stock_interval = stock_interval
        self._last_publish = -stock_interval
        self._timer: asyncio.TimerHandle | None = None
        self._stock_pending = False
        # When the streams had all written the last publish (None: not yet).
        self._drained_at: float | None = None
        self._last_was_tick = False  # whether the last publish was a stock tick
        self._heartbeats = _HeartbeatWheel()
        # Coalesced batches by cursor, for the current `published`: one per room, not per stream.
        self._batches: dict[int, list[RoomEvent]] = {}
        # Reads of a batch under way, by cursor: (published when it started, the read).
        self._reading: dict[int, tuple[int, asyncio.Future[list[RoomEvent]]]] = {}
        self._snapshot: tuple[int, float, SnapshotState] | None = None
        self._snapshot_loading: asyncio.Future[SnapshotState] | None = None
        self.subscribers = 0

    def notify(
        self, sequence: int, lifecycle: bool = True, events: Sequence[RoomEvent] = ()
    ) -> None:
        """A commit put this room's events up to `sequence` in the store: `events`, when
        this process committed them (else the feed reads them when it publishes)."""
        if sequence <= self.known_last:
            return
        self.known_last = sequence
        if events and events[-1].sequence == sequence:
            self._keep(events)
        if lifecycle or self._stock_interval <= 0:
            self._publish(tick=False)
            return
        self._stock_pending = True
        if self._timer is None:
            loop = asyncio.get_running_loop()
            due = max(loop.time(), self._last_publish + self._stock_interval)
            self._timer = loop.call_at(due, self._stock_due)

    def _stock_due(self) -> None:
        """A stock tick may be due. Each tick costs a write per stream, so a tick waits until
        the room's streams have written the last publish, and after a tick as long again as
        that took (ticks to a big room take at most about half the server's time, leaving
        the rest to grabs and lifecycle events); at the latest STOCK_MAX_DEFER_S after it. A
        small room writes at once: its ticks come every stock interval."""
        self._timer = None
        if not self._stock_pending:
            return
        loop = asyncio.get_running_loop()
        last = self._last_publish
        due = last + STOCK_MAX_DEFER_S
        if self._drained_at is not None:
            rested = self._drained_at
            if self._last_was_tick:  # never tick after tick: grabs get their share
                rested += self._drained_at - last
            due = max(last + self._stock_interval, min(rested, due))
        if loop.time() >= due:
            self._publish(tick=True)
        else:
            self._timer = loop.call_at(due, self._stock_due)

    def _drained(self) -> bool:
        # Streams waiting for news have written everything; a few stalled phones do not count.
        return len(self._waiters) >= self.subscribers - self.subscribers // 20

    def _publish(self, *, tick: bool) -> None:
        self._last_was_tick = tick
        self._stock_pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last_publish = asyncio.get_running_loop().time()
        self._drained_at = None
        if self.known_last > self.published:
            previous, self.published = self.published, self.known_last
            self._batches.clear()
            if self._waiters:
                # Every waiting stream sits at `previous`: read their batch once, then wake
                # them, so that each finds it ready instead of awaiting the read.
                self._start_read(previous).add_done_callback(self._wake_all)

    def _wake_all(self, _: object = None) -> None:
        waiters, self._waiters = self._waiters, set()
        self._heartbeats.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_past(self, cursor: int, seconds: float) -> bool:
        """Wait up to `seconds` for an event after `cursor` to be published."""
        if self.published > cursor:
            return True
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.add(waiter)
        self._heartbeats.add(waiter, loop.time() + seconds)
        if self._drained_at is None and self._drained():
            # The last stream to finish writing the last publish: a tick may be due now.
            self._drained_at = loop.time()
            if self._timer is not None:
                self._timer.cancel()
                self._stock_due()
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
        return self.published > cursor

    def behind(self, cursor: int, max_lag: int) -> bool:
        """Whether a stream at `cursor` lags the published events by more than `max_lag`."""
        return self.published - cursor > max_lag

    def batch_after(self, cursor: int) -> list[RoomEvent] | None:
        """The published events after `cursor` (coalesced) if known without waiting: none
        when nothing newer is published, or the batch another stream at `cursor` already
        read. None: `read_coalesced` must read it."""
        if cursor >= self.published:
            return []
        return self._batches.get(cursor)

    async def read_coalesced(self, cursor: int) -> list[RoomEvent]:
        """The published events after `cursor` with superseded stock changes left out.

        A room's streams mostly sit at the same cursor when a change is published: the
        first one reads the batch, the others await that read (a crowd does not queue on
        the fill lock one by one)."""
        ready = self.batch_after(cursor)
        if ready is not None:
            return ready
        return await asyncio.shield(self._start_read(cursor))

    def _start_read(self, cursor: int) -> asyncio.Future[list[RoomEvent]]:
        """The read of the batch after `cursor` for what is published now: the one under
        way, or a new one."""
        published = self.published
        under_way = self._reading.get(cursor)
        if under_way is not None and under_way[0] == published:
            return under_way[1]
        reading = asyncio.ensure_future(self._read_batch(cursor, published))
        self._reading[cursor] = (published, reading)
        reading.add_done_callback(lambda done: self._read_done(cursor, done))
        return reading

    def _read_done(self, cursor: int, done: asyncio.Future[list[RoomEvent]]) -> None:
        under_way = self._reading.get(cursor)
        if under_way is not None and under_way[1] is done:
            del self._reading[cursor]
        if not done.cancelled():
            done.exception()  # retrieved: a failed read is each awaiting stream's to report

    async def _read_batch(self, cursor: int, published: int) -> list[RoomEvent]:
        events = [e for e in await self.read_after(cursor) if e.sequence <= published]
        if self._stock_interval > 0:
            events = coalesce(events)
        if published == self.published:
            self._batches[cursor] = events
        return events

    async def snapshot_state(self, load: SnapshotLoader) -> SnapshotState:
        """The room's live pools and event bounds, read once for every subscriber that asks
        while nothing new was committed (and for at most SNAPSHOT_REUSE_S): a crowd joining
        a room costs one store read, not one per viewer."""
        now = asyncio.get_running_loop().time()
        cached = self._snapshot
        if (
            cached is not None
            and cached[0] >= self.known_last
            and now - cached[1] < (SNAPSHOT_REUSE_S)
        ):
            return cached[2]
        if self._snapshot_loading is None:
            loading = asyncio.ensure_future(load())
            self._snapshot_loading = loading
            loading.add_done_callback(self._snapshot_loaded)
        return await asyncio.shield(self._snapshot_loading)

    def _snapshot_loaded(self, loading: asyncio.Future[SnapshotState]) -> None:
        self._snapshot_loading = None
        if loading.cancelled() or loading.exception() is not None:
            return
        state = loading.result()
        bounds = state[1]
        if bounds is not None:
            loop_time = asyncio.get_running_loop().time()
            self._snapshot = (bounds.last, loop_time, state)

    async def read_after(self, cursor: int) -> list[RoomEvent]:
        """Committed events after `cursor`, in order (a batch; call again for more)."""
        if cursor >= self.known_last:
            return []  # every commit notifies the feed: nothing newer exists yet
        cached = self._cached_after(cursor)
        if cached is not None:
            return cached
        if self._ring and cursor + 1 < self._ring[0].sequence:
            # Too far behind for the cache: read this subscriber's catch-up directly.
            return await self._fetch(cursor)
        async with self._fill_lock:
            cached = self._cached_after(cursor)
            if cached is not None:
                return cached
            ring = self._ring
            if ring and ring[-1].sequence <= cursor < ring[-1].sequence + _FETCH_LIMIT:
                # Extend the cache from its end, so it stays one contiguous run: streams a
                # little behind this one keep reading from it instead of each going to the
                # store (clearing it here once sent thousands of streams to the store).
                events = await self._fetch(ring[-1].sequence)
                ring.extend(events)
                return self._cached_after(cursor) or []
            ring.clear()
            events = await self._fetch(cursor)
            ring.extend(events)
            return events

    def _keep(self, committed: Sequence[RoomEvent]) -> None:
        """Put a local commit's events in the cache if they continue it, each naming the
        room's lifecycle event before it as a read would: the publish then finds them there
        instead of reading them back (under a fan-out each store round trip waits behind
        thousands of stream writes).

        A read of the store under way cannot overlap them: reads start only past the cache's
        end while something newer is known, and a commit's events are kept only when they
        follow the cache's end and nothing newer was known."""
        ring = self._ring
        if not ring or ring[-1].sequence + 1 != committed[0].sequence:
            return  # not contiguous with what is cached: read when published
        last = ring[-1]
        previous = last.sequence if last.is_lifecycle else last.previous_lifecycle
        for event in committed:
            ring.append(replace(event, previous_lifecycle=previous))
            if event.is_lifecycle:
                previous = event.sequence

    def _cached_after(self, cursor: int) -> list[RoomEvent] | None:
        ring = self._ring
        if not ring or not ring[0].sequence <= cursor + 1 <= ring[-1].sequence:
            return None
        start = cursor + 1 - ring[0].sequence
        return [ring[i] for i in range(start, min(len(ring), start + _FETCH_LIMIT))]

    async def _fetch(self, cursor: int) -> list[RoomEvent]:
        events = await finish_even_if_cancelled(self._read(cursor))
        if events and events[-1].sequence > self.known_last:
            # Committed, but not heard of yet: publish what it holds like a commit would.
            fresh = [e for e in events if e.sequence > self.known_last]
            self.notify(events[-1].sequence, any(e.is_lifecycle for e in fresh))
        return events

    async def _read(self, cursor: int) -> list[RoomEvent]:
        async with self._store.transaction(write=False) as tx:
            return await tx.events_after(self.room_id, cursor, _FETCH_LIMIT)

    def close(self) -> None:
        """Wake every waiter (used at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        self._wake_all()


class FeedRegistry:
    """The feeds of rooms that have subscribers; fed by the store's commit listener."""

    def __init__(self, store: Store, capacity: int = 4096, stock_interval: float = 0.0) -> None:
        self._store = store
        self._capacity = capacity
        self._stock_interval = stock_interval
        self._feeds: dict[str, RoomFeed] = {}
        self.closed = False
        self._resyncs: set[asyncio.Task[None]] = set()
        store.add_commit_listener(self._on_commit)
        store.add_resync_listener(self._on_resync)

    def _on_commit(
        self, room_id: str, sequence: int, lifecycle: bool, events: Sequence[RoomEvent]
    ) -> None:
        feed = self._feeds.get(room_id)
        if feed is not None:
            feed.notify(sequence, lifecycle, events)

    def _on_resync(self) -> None:
        # Commit notifications may have been missed: re-read where each watched room is.
        task = asyncio.ensure_future(self._resync())
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resync(self) -> None:
        for room_id in list(self._feeds):
            try:
                async with self._store.transaction(write=False) as tx:
                    bounds = await tx.event_bounds(room_id)
            except DomainError:
                log.warning("could not re-read room %s after a missed notification", room_id)
                continue
            feed = self._feeds.get(room_id)
            if feed is not None and bounds is not None:
                feed.notify(bounds.last)

    def get(self, room_id: str) -> RoomFeed | None:
        """The room's feed if it has subscribers in this process."""
        return self._feeds.get(room_id)

    def join(self, room_id: str, known_last: int) -> RoomFeed:
        """The room's feed, counting one more subscriber."""
        feed = self._feeds.get(room_id)
        if feed is None:
            feed = self._feeds[room_id] = RoomFeed(
                room_id, self._store, known_last, self._capacity, self._stock_interval
            )
        else:
            feed.notify(known_last)
        feed.subscribers += 1
        return feed

    def leave(self, feed: RoomFeed) -> None:
        """One subscriber fewer; the feed goes when the last one leaves."""
        feed.subscribers -= 1
        if feed.subscribers <= 0 and self._feeds.get(feed.room_id) is feed:
            del self._feeds[feed.room_id]
            feed.close()

    def open_streams(self) -> int:
        """How many subscriptions are open."""
        return sum(f.subscribers for f in self._feeds.values())

    def close(self) -> None:
        """Shut down: wake every subscriber so it can end its stream."""
        self.closed = True
        for feed in self._feeds.values():
            feed.close()
