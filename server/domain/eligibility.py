"""Who may grab from a pool: the rule, the viewer's facts, and what a viewer is missing."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.domain.errors import FieldViolation

MAX_FOLLOW_AGE = timedelta(days=3650)
MAX_WATCH_TIME = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Eligibility:
    """A pool's conditions; every one set must hold. The default lets every viewer grab."""

    followers_only: bool = False
    min_follow_age: timedelta | None = None
    max_follow_age: timedelta | None = None
    new_buyers_only: bool = False
    min_watch_time: timedelta | None = None

    @property
    def restricts(self) -> bool:
        """Whether any condition is set."""
        return self != _ANYONE


_ANYONE = Eligibility()


@dataclass(frozen=True, slots=True)
class ViewerFacts:
    """What the platform vouches for about a viewer (signed claims of their token)."""

    follows: Mapping[str, datetime] = field(default_factory=dict)
    """Streamer id -> when the viewer followed them."""
    bought_from: frozenset[str] = frozenset()
    """Shops the viewer has ordered from before."""


class Gap(enum.StrEnum):
    """A condition a viewer does not meet."""

    NOT_FOLLOWER = "not_follower"
    FOLLOWED_TOO_RECENTLY = "followed_too_recently"
    NOT_NEW_FOLLOWER = "not_new_follower"
    NOT_NEW_BUYER = "not_new_buyer"
    WATCH_TIME = "watch_time"


@dataclass(frozen=True, slots=True)
class Missing:
    """One unmet condition; `remaining` for those that time alone fulfils."""

    gap: Gap
    description: str
    remaining: timedelta | None = None


@dataclass(frozen=True, slots=True)
class WatchSession:
    """A viewer's watching of a room as the processes serving them share it: started, last
    seen, and until when an open stream vouches for it (a lease, renewed while it is open)."""

    room_id: str
    viewer_id: str
    started_at: datetime
    seen_at: datetime
    live_until: datetime

    def alive_at(self, at: datetime, gap: timedelta) -> bool:
        """Whether the session still runs at `at`: a stream open, or gone for at most `gap`."""
        return at <= self.live_until or at - self.seen_at <= gap

    def watched(self, now: datetime, gap: timedelta) -> timedelta:
        """How long the viewer has watched as of `now` (0 once the session ended)."""
        if now <= self.live_until:
            return now - self.started_at
        if now - self.seen_at <= gap:
            return self.seen_at - self.started_at
        return timedelta(0)

    def merged(self, newer: WatchSession, gap: timedelta) -> WatchSession:
        """This session and a newer report of the same viewer: one session if this one was
        still running when the newer started, else the newer alone."""
        if not self.alive_at(newer.started_at, gap):
            return newer
        return WatchSession(
            self.room_id,
            self.viewer_id,
            min(self.started_at, newer.started_at),
            max(self.seen_at, newer.seen_at),
            max(self.live_until, newer.live_until),
        )


@dataclass(frozen=True, slots=True)
class PoolEligibility:
    """Whether a viewer may grab from a pool now, and what is missing."""

    pool_id: str
    missing: tuple[Missing, ...]

    @property
    def eligible(self) -> bool:
        return not self.missing


def _seconds(value: timedelta) -> str:
    # Round up: "watch 1 more second" rather than "0 more seconds" with 0.4 s left.
    whole = -int(-value.total_seconds() // 1)
    return f"{whole} more second{'s' if whole != 1 else ''}"


def missing(
    rule: Eligibility,
    facts: ViewerFacts,
    streamer_id: str,
    linked_shops: frozenset[str],
    watched: timedelta,
    now: datetime,
) -> tuple[Missing, ...]:
    """The conditions of `rule` the viewer does not meet at `now` (empty: eligible)."""
    out: list[Missing] = []
    if rule.followers_only:
        since = facts.follows.get(streamer_id)
        if since is None:
            out.append(Missing(Gap.NOT_FOLLOWER, "follow the streamer"))
        else:
            age = now - since
            if rule.min_follow_age is not None and age < rule.min_follow_age:
                left = rule.min_follow_age - age
                out.append(
                    Missing(
                        Gap.FOLLOWED_TOO_RECENTLY,
                        f"followed too recently: eligible in {_seconds(left)}",
                        left,
                    )
                )
            if rule.max_follow_age is not None and age > rule.max_follow_age:
                out.append(Missing(Gap.NOT_NEW_FOLLOWER, "only for new followers"))
    if rule.new_buyers_only and facts.bought_from & linked_shops:
        out.append(Missing(Gap.NOT_NEW_BUYER, "only for first orders from the room's shops"))
    if rule.min_watch_time is not None and watched < rule.min_watch_time:
        left = rule.min_watch_time - watched
        out.append(Missing(Gap.WATCH_TIME, f"watch {_seconds(left)}", left))
    return tuple(out)


def validate(rule: Eligibility, prefix: str, out: list[FieldViolation]) -> None:
    """Violations of a pool's eligibility rule, named under `prefix`."""
    for name, value, bound in (
        ("min_follow_age", rule.min_follow_age, MAX_FOLLOW_AGE),
        ("max_follow_age", rule.max_follow_age, MAX_FOLLOW_AGE),
        ("min_watch_time", rule.min_watch_time, MAX_WATCH_TIME),
    ):
        if value is None:
            continue
        where = f"{prefix}.{name}"
        if value % timedelta(seconds=1) or not timedelta(0) < value <= bound:
            out.append(FieldViolation(where, f"must be whole seconds, above 0 and at most {bound}"))
        elif name != "min_watch_time" and not rule.followers_only:
            out.append(FieldViolation(where, "needs followers_only"))
    low, high = rule.min_follow_age, rule.max_follow_age
    if low is not None and high is not None and low >= high:
        out.append(FieldViolation(f"{prefix}.max_follow_age", "must be above min_follow_age"))
