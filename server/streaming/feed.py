"""One feed per room with subscribers: knows the newest committed sequence and caches recent
events, so a change is read from the store once per room, not once per subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from server.domain.models import RoomEvent
from server.service.shielding import finish_even_if_cancelled
from server.store.interface import Store

_FETCH_LIMIT = 500


class RoomFeed:
    """Recent events of one room. Runs on the event loop; no locking beyond _fill_lock."""

    def __init__(self, room_id: str, store: Store, known_last: int, capacity: int) -> None:
        self.room_id = room_id
        self._store = store
        self.known_last = known_last
        self._ring: deque[RoomEvent] = deque(maxlen=capacity)
        # Guards filling the ring, so concurrent subscribers trigger one store read.
        self._fill_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.subscribers = 0

    def notify(self, sequence: int) -> None:
        """A commit put this room's events up to `sequence` in the store."""
        if sequence > self.known_last:
            self.known_last = sequence
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_past(self, cursor: int, seconds: float) -> bool:
        """Wait up to `seconds` for an event after `cursor` to be committed."""
        if self.known_last > cursor:
            return True
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)
        return self.known_last > cursor

    async def read_after(self, cursor: int) -> list[RoomEvent]:
        """Committed events after `cursor`, in order (a batch; call again for more)."""
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
            if not self._ring or self._ring[-1].sequence != cursor:
                self._ring.clear()
            events = await self._fetch(cursor)
            self._ring.extend(events)
            return events

    def _cached_after(self, cursor: int) -> list[RoomEvent] | None:
        ring = self._ring
        if not ring or not ring[0].sequence <= cursor + 1 <= ring[-1].sequence:
            return None
        start = cursor + 1 - ring[0].sequence
        return [ring[i] for i in range(start, min(len(ring), start + _FETCH_LIMIT))]

    async def _fetch(self, cursor: int) -> list[RoomEvent]:
        events = await finish_even_if_cancelled(self._read(cursor))
        if events and events[-1].sequence > self.known_last:
            self.known_last = events[-1].sequence
        return events

    async def _read(self, cursor: int) -> list[RoomEvent]:
        async with self._store.transaction(write=False) as tx:
            return await tx.events_after(self.room_id, cursor, _FETCH_LIMIT)

    def close(self) -> None:
        """Wake every waiter (used at shutdown)."""
        self._changed.set()


class FeedRegistry:
    """The feeds of rooms that have subscribers; fed by the store's commit listener."""

    def __init__(self, store: Store, capacity: int = 4096) -> None:
        self._store = store
        self._capacity = capacity
        self._feeds: dict[str, RoomFeed] = {}
        self.closed = False
        store.add_commit_listener(self._on_commit)

    def _on_commit(self, room_id: str, sequence: int) -> None:
        feed = self._feeds.get(room_id)
        if feed is not None:
            feed.notify(sequence)

    def join(self, room_id: str, known_last: int) -> RoomFeed:
        """The room's feed, counting one more subscriber."""
        feed = self._feeds.get(room_id)
        if feed is None:
            feed = self._feeds[room_id] = RoomFeed(room_id, self._store, known_last, self._capacity)
        else:
            feed.notify(known_last)
        feed.subscribers += 1
        return feed

    def leave(self, feed: RoomFeed) -> None:
        """One subscriber fewer; the feed goes when the last one leaves."""
        feed.subscribers -= 1
        if feed.subscribers <= 0 and self._feeds.get(feed.room_id) is feed:
            del self._feeds[feed.room_id]

    def open_streams(self) -> int:
        """How many subscriptions are open."""
        return sum(f.subscribers for f in self._feeds.values())

    def close(self) -> None:
        """Shut down: wake every subscriber so it can end its stream."""
        self.closed = True
        for feed in self._feeds.values():
            feed.close()
