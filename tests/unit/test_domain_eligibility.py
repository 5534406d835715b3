"""Eligibility rules and watch sessions, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.domain.eligibility import Eligibility, Gap, ViewerFacts, WatchSession, missing
from server.service.watch import WatchTracker

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SHOPS = frozenset({"shop-1"})


def gaps(rule: Eligibility, facts: ViewerFacts, watched: float = 0.0) -> list[Gap]:
    found = missing(rule, facts, "streamer", SHOPS, timedelta(seconds=watched), NOW)
    return [m.gap for m in found]


def test_no_rule_lets_everyone_grab() -> None:
    assert not Eligibility().restricts
    assert gaps(Eligibility(), ViewerFacts()) == []


def test_every_unmet_condition_is_listed() -> None:
    rule = Eligibility(
        followers_only=True,
        min_follow_age=timedelta(days=7),
        new_buyers_only=True,
        min_watch_time=timedelta(seconds=60),
    )
    facts = ViewerFacts({"streamer": NOW - timedelta(days=1)}, frozenset({"shop-1"}))
    assert gaps(rule, facts, watched=10) == [
        Gap.FOLLOWED_TOO_RECENTLY,
        Gap.NOT_NEW_BUYER,
        Gap.WATCH_TIME,
    ]
    found = missing(rule, facts, "streamer", SHOPS, timedelta(seconds=10), NOW)
    assert found[0].remaining == timedelta(days=6)
    assert found[2].description == "watch 50 more seconds"
    old = ViewerFacts({"streamer": NOW - timedelta(days=8)}, frozenset({"other"}))
    assert gaps(rule, old, watched=60) == []


def test_new_followers_only() -> None:
    rule = Eligibility(followers_only=True, max_follow_age=timedelta(days=1))
    assert gaps(rule, ViewerFacts({"streamer": NOW - timedelta(hours=2)})) == []
    assert gaps(rule, ViewerFacts({"streamer": NOW - timedelta(days=2)})) == [Gap.NOT_NEW_FOLLOWER]
    assert gaps(rule, ViewerFacts({"another": NOW})) == [Gap.NOT_FOLLOWER]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_watch_sessions_survive_short_gaps_and_end_after_long_ones() -> None:
    clock = Clock()
    watch = WatchTracker(timedelta(seconds=30), clock)
    assert watch.watched("room", "v") == timedelta(0)
    watch.opened("room", "v")
    watch.opened("room", "v")  # a second stream of the same viewer
    clock.advance(20)
    watch.closed("room", "v")
    clock.advance(5)
    assert watch.watched("room", "v") == timedelta(seconds=25)  # one stream still open
    watch.closed("room", "v")
    clock.advance(10)
    assert watch.watched("room", "v") == timedelta(seconds=25)  # gone, not counting
    watch.opened("room", "v")  # back within the gap: the session goes on
    clock.advance(5)
    assert watch.watched("room", "v") == timedelta(seconds=40)
    watch.closed("room", "v")
    clock.advance(31)
    assert watch.watched("room", "v") == timedelta(0)
    assert len(watch) == 0
    watch.opened("room", "v")
    clock.advance(1)
    assert watch.watched("room", "v") == timedelta(seconds=1)
    assert watch.watched("other-room", "v") == timedelta(0)


def test_shared_sessions_merge_when_they_overlap() -> None:
    gap = timedelta(seconds=30)
    at = NOW
    old = WatchSession("r", "v", at, at + timedelta(seconds=50), at + timedelta(seconds=50))
    assert old.watched(at + timedelta(seconds=60), gap) == timedelta(seconds=50)
    assert old.watched(at + timedelta(seconds=81), gap) == timedelta(0)
    # A stream on another process from 70 s: within the gap, one session from `at`.
    newer = WatchSession(
        "r",
        "v",
        at + timedelta(seconds=70),
        at + timedelta(seconds=90),
        at + timedelta(seconds=110),
    )
    joined = old.merged(newer, gap)
    assert joined.started_at == at and joined.live_until == newer.live_until
    assert joined.watched(at + timedelta(seconds=100), gap) == timedelta(seconds=100)
    # From 90 s on, the old session had ended: the newer one starts afresh.
    later_one = WatchSession(
        "r",
        "v",
        at + timedelta(seconds=90),
        at + timedelta(seconds=90),
        at + timedelta(seconds=120),
    )
    assert old.merged(later_one, gap) == later_one
