"""How long each viewer has watched a room, measured from their room subscriptions.

A viewer's watching session starts when they open a stream to the room and goes on while
any of their streams is open; after the last one closes it survives a reconnect within
`gap`. Kept in this process's memory: a viewer's app keeps its stream and its grabs on one
channel, hence one server process (see docs/architecture.md for what this leaves out).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from server.service.clock import Clock

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

    def watched(self, room_id: str, viewer_id: str) -> timedelta:
        """How long the viewer has watched the room in their current session (0: none)."""
        now = self._clock()
        session = self._current((room_id, viewer_id), now)
        if session is None:
            return timedelta(0)
        end = now if session.open else session.left_at or now
        return max(timedelta(0), end - session.start)

    def _sweep(self, now: datetime) -> None:
        for key in list(self._sessions):
            self._current(key, now)

    def __len__(self) -> int:
        return len(self._sessions)
