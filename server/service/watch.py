"""How long each viewer has watched a room, measured from their room subscriptions.

A viewer's watching session starts when they open a stream to the room and goes on while
any of their streams is open; after the last one closes it survives a reconnect within
`gap`. `WatchTracker` keeps this process's sessions in memory. With several processes on one
database, `WatchJournal` shares them through the store: it writes new and ended sessions
every second and renews the lease of open ones, merging with what other processes wrote, so
a viewer who reconnects to another process (or grabs through one) keeps their watch time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from server.domain.eligibility import WatchSession
from server.domain.errors import DomainError
from server.service.clock import Clock
from server.store.interface import Store

log = logging.getLogger(__name__)

_SWEEP_EVERY = 4096  # stream openings between sweeps of expired sessions


class _Session:
    __slots__ = ("left_at", "open", "start")

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.open = 0
        self.left_at: datetime | None = None


class WatchTracker:
    """Watching sessions per (room, viewer)."""

    def __init__(self, gap: timedelta, clock: Clock) -> None:
        self._gap = gap
        self._clock = clock
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._openings = 0
        self.changed: set[tuple[str, str]] = set()
        """Sessions opened or left since the journal last took them (with a journal)."""
        self.journaled = False

    @property
    def gap(self) -> timedelta:
        return self._gap

    def _current(self, key: tuple[str, str], now: datetime) -> _Session | None:
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.open == 0 and session.left_at is not None and now - session.left_at > self._gap:
            del self._sessions[key]
            return None
        return session

    def opened(self, room_id: str, viewer_id: str) -> None:
        """A stream of the viewer to the room opened."""
        now = self._clock()
        key = (room_id, viewer_id)
        session = self._current(key, now)
        if session is None:
            session = self._sessions[key] = _Session(now)
        session.open += 1
        if self.journaled:
            self.changed.add(key)
        self._openings += 1
        if self._openings % _SWEEP_EVERY == 0:
            self._sweep(now)

    def closed(self, room_id: str, viewer_id: str) -> None:
        """A stream of the viewer to the room ended."""
        session = self._sessions.get((room_id, viewer_id))
        if session is None or session.open == 0:
            return
        session.open -= 1
        if session.open == 0:
            session.left_at = self._clock()
            if self.journaled:
                self.changed.add((room_id, viewer_id))

    def watched(self, room_id: str, viewer_id: str) -> timedelta:
        """How long the viewer has watched the room in their current session (0: none)."""
        now = self._clock()
        session = self._current((room_id, viewer_id), now)
        if session is None:
            return timedelta(0)
        end = now if session.open else session.left_at or now
        return max(timedelta(0), end - session.start)

    def report(
        self, keys: set[tuple[str, str]], now: datetime, lease: timedelta
    ) -> list[WatchSession]:
        """The sessions of `keys` as this process saw them, to share: open ones vouched for
        until now + lease, ended ones as last seen."""
        out = []
        for key in keys:
            session = self._current(key, now)
            if session is None:
                continue
            seen = now if session.open else session.left_at or now
            until = now + lease if session.open else seen
            out.append(WatchSession(key[0], key[1], session.start, seen, until))
        return out

    def open_keys(self) -> set[tuple[str, str]]:
        return {key for key, session in self._sessions.items() if session.open}

    def _sweep(self, now: datetime) -> None:
        for key in list(self._sessions):
            self._current(key, now)

    def __len__(self) -> int:
        return len(self._sessions)


class WatchJournal:
    """Shares a tracker's sessions with the other processes of the database."""

    def __init__(
        self, tracker: WatchTracker, store: Store, clock: Clock, renew_every: float = 10.0
    ) -> None:
        self._tracker = tracker
        tracker.journaled = True
        self._store = store
        self._clock = clock
        self._renew_every = max(1.0, min(renew_every, tracker.gap.total_seconds() / 3 or 1.0))
        self._lease = timedelta(seconds=2 * self._renew_every + 1)
        self._last_renewal = 0.0
        self._remote: dict[tuple[str, str], tuple[float, WatchSession | None]] = {}

    async def run(self, every: float = 1.0) -> None:
        """Flush every `every` seconds until cancelled; prune old sessions now and then."""
        loop = asyncio.get_running_loop()
        flushes = 0
        while True:
            await asyncio.sleep(every)
            try:
                renew = loop.time() - self._last_renewal >= self._renew_every
                await self.flush(renew=renew)
                if renew:
                    self._last_renewal = loop.time()
                flushes += 1
                if flushes % 600 == 0:
                    async with self._store.transaction(write=True) as tx:
                        await tx.prune_watch_sessions(self._clock() - 2 * self._tracker.gap)
            except asyncio.CancelledError:
                raise
            except (DomainError, OSError):
                log.exception("sharing watch sessions failed; retrying")

    async def flush(self, *, renew: bool = True) -> None:
        """Write the sessions that changed (and, with `renew`, every open one's lease)."""
        keys = self._tracker.changed
        self._tracker.changed = set()
        if renew:
            keys |= self._tracker.open_keys()
        now = self._clock()
        mine = self._tracker.report(keys, now, self._lease)
        if not mine:
            return
        try:
            async with self._store.transaction(write=True) as tx:
                stored = await tx.get_watch_sessions(
                    [(x.room_id, x.viewer_id) for x in mine], for_update=True
                )
                gap = self._tracker.gap
                merged = [
                    stored[key].merged(x, gap) if (key := (x.room_id, x.viewer_id)) in stored else x
                    for x in mine
                ]
                await tx.put_watch_sessions(merged)
        except BaseException:
            self._tracker.changed |= keys  # written next time
            raise

    async def watched(self, room_id: str, viewer_id: str) -> timedelta:
        """The viewer's watch time as the shared sessions say (read at most once a second)."""
        key = (room_id, viewer_id)
        loop_now = asyncio.get_running_loop().time()
        cached = self._remote.get(key)
        if cached is None or loop_now - cached[0] > 1.0:
            async with self._store.transaction(write=False) as tx:
                found = (await tx.get_watch_sessions([key])).get(key)
            if len(self._remote) >= 100_000:
                self._remote.clear()
            self._remote[key] = cached = (loop_now, found)
        session = cached[1]
        return (
            timedelta(0) if session is None else session.watched(self._clock(), self._tracker.gap)
        )
