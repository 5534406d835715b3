"""What a coalesced batch keeps: every lifecycle event in order, and for each pool only the
stock changes no later stock change or sell-out of that pool supersedes. And the feed's
heartbeat wheel: one timer per room, deadlines per stream. And the pacing of stock ticks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from server.domain.models import EventKind, RoomEvent
from server.store.interface import Store
from server.streaming.feed import (
    HEARTBEAT_SLOT_S,
    STOCK_MAX_DEFER_S,
    RoomFeed,
    _HeartbeatWheel,
    coalesce,
)
from tests.unit.test_store_sql import NOW, make_pool

_POOLS = {pool_id: make_pool(pool_id) for pool_id in ("a", "b", "c")}
_KINDS = (
    EventKind.STOCK_CHANGED,
    EventKind.STOCK_CHANGED,
    EventKind.STOCK_CHANGED,
    EventKind.POOL_SOLD_OUT,
    EventKind.POOL_CHANGED,
    EventKind.POOL_CLOSED,
)


def _events(spec: list[tuple[str, EventKind]]) -> list[RoomEvent]:
    return [
        RoomEvent("room-1", seq, NOW, kind, _POOLS[pool_id])
        for seq, (pool_id, kind) in enumerate(spec, start=1)
    ]


def _stock_word(event: RoomEvent) -> bool:
    return event.kind in (EventKind.STOCK_CHANGED, EventKind.POOL_SOLD_OUT)


def test_a_sell_out_supersedes_the_change_to_zero_before_it() -> None:
    events = _events(
        [
            ("a", EventKind.STOCK_CHANGED),
            ("b", EventKind.STOCK_CHANGED),
            ("a", EventKind.STOCK_CHANGED),
            ("a", EventKind.POOL_SOLD_OUT),
            ("a", EventKind.POOL_CHANGED),  # stock added: the pool reopens
            ("a", EventKind.STOCK_CHANGED),
        ]
    )
    assert [e.sequence for e in coalesce(events)] == [2, 4, 5, 6]


def test_a_batch_with_nothing_superseded_is_kept_as_it_is() -> None:
    events = _events([("a", EventKind.STOCK_CHANGED), ("b", EventKind.POOL_SOLD_OUT)])
    assert coalesce(events) is events


@given(st.lists(st.tuples(st.sampled_from(sorted(_POOLS)), st.sampled_from(_KINDS)), max_size=40))
def test_coalescing_keeps_every_lifecycle_event_and_each_pools_last_stock_word(
    spec: list[tuple[str, EventKind]],
) -> None:
    events = _events(spec)
    kept = coalesce(events)
    sequences = [e.sequence for e in kept]
    assert sequences == sorted(sequences)  # a subsequence, in order
    assert [e for e in kept if e.is_lifecycle] == [e for e in events if e.is_lifecycle]
    for pool_id in _POOLS:
        words = [e for e in events if e.pool.pool_id == pool_id and _stock_word(e)]
        kept_words = [e for e in kept if e.pool.pool_id == pool_id and _stock_word(e)]
        # The pool's last word on its stock survives, and no kept change is stale.
        assert kept_words[-1:] == words[-1:]
        # Every kept word but the last is a sell-out (a later word supersedes a change).
        assert all(e.kind is EventKind.POOL_SOLD_OUT for e in kept_words[:-1])


async def test_heartbeat_deadlines_stay_per_stream_and_a_wake_forgets_them() -> None:
    loop = asyncio.get_running_loop()
    wheel = _HeartbeatWheel()
    start = loop.time()
    later = [loop.create_future() for _ in range(3)]
    soon = loop.create_future()
    for i, waiter in enumerate(later):
        wheel.add(waiter, start + 0.6 + 0.3 * i)
    wheel.add(soon, start + 0.1)  # an earlier deadline re-arms the one timer
    await asyncio.wait_for(soon, 1)
    assert loop.time() - start < 0.1 + 2 * HEARTBEAT_SLOT_S
    assert not any(w.done() for w in later)
    await asyncio.wait_for(later[0], 2)
    assert not later[2].done()  # staggered: each at its own deadline
    woken = [loop.time()]
    await later[1]
    woken.append(loop.time())
    assert woken[1] - woken[0] >= 0.3 - HEARTBEAT_SLOT_S
    wheel.clear()  # every waiter was woken by a publish: no heartbeat is due any more
    await asyncio.sleep(0.6)
    assert not later[2].done()


class _EmptyStore:
    """Only what the feed reads when a batch is published: a room with no stored events (the
    pacing under test does not depend on them)."""

    @contextlib.asynccontextmanager
    async def transaction(self, write: bool = False) -> AsyncIterator[_EmptyStore]:
        yield self

    async def events_after(self, room_id: str, cursor: int, limit: int) -> list[RoomEvent]:
        return []


async def _stream(
    feed: RoomFeed, writes_s: float, woken: list[tuple[float, int]], last: asyncio.Event
) -> None:
    """A room stream: waits for a publish, then spends `writes_s` writing it."""
    loop = asyncio.get_running_loop()
    cursor = feed.published
    while True:
        await feed.wait_past(cursor, 60)
        cursor = feed.published
        woken.append((loop.time(), cursor))
        if cursor == 3:
            last.set()
        await asyncio.sleep(writes_s)


async def _ticks(
    streams: int, stalled: int, writes_s: float, *, opened: bool = False
) -> list[float]:
    """Publish stock changes 1, 2, 3 fifty milliseconds apart (a stampede's commits) to a room
    whose streams take `writes_s` to write each tick, and `stalled` more that never come back
    for the next; when each tick reached the streams. `opened`: change 1 is a lifecycle
    event (the pool opening), the others stock changes."""
    feed = RoomFeed("room-1", cast(Store, _EmptyStore()), 0, 16, stock_interval=0.05)
    feed.subscribers = streams + stalled
    woken: list[tuple[float, int]] = []
    last = asyncio.Event()
    tasks = [asyncio.ensure_future(_stream(feed, writes_s, woken, last)) for _ in range(streams)]
    await asyncio.sleep(0.05)
    for sequence in (1, 2, 3):
        feed.notify(sequence, lifecycle=opened and sequence == 1)
        await asyncio.sleep(0.05)
    await asyncio.wait_for(last.wait(), 5)
    for task in tasks:
        task.cancel()
    first: dict[int, float] = {}
    for at, published in woken:
        first.setdefault(published, at)
    return [first[p] for p in sorted(first)]


async def test_a_stock_tick_waits_for_the_last_one_to_be_written_then_rests_as_long() -> None:
    ticks = await _ticks(streams=20, stalled=0, writes_s=0.3)
    assert len(ticks) == 2  # the first change at once; 2 and 3 coalesced into the next tick
    gap = ticks[1] - ticks[0]
    # Written in 0.3 s, then as long again: ~0.6 s, neither at once nor the 2 s maximum.
    assert 0.55 <= gap < 1.5, gap


async def test_a_few_stalled_streams_do_not_hold_the_tick_and_many_hold_it_two_seconds() -> None:
    few = await _ticks(streams=20, stalled=1, writes_s=0.1)  # 1 in 20 may stall
    assert few[1] - few[0] < 1.0, few
    many = await _ticks(streams=20, stalled=4, writes_s=0.1)
    assert STOCK_MAX_DEFER_S - 0.1 <= many[1] - many[0] < STOCK_MAX_DEFER_S + 0.5, many


async def test_after_a_lifecycle_event_the_tick_goes_once_it_is_written_without_a_rest() -> None:
    ticks = await _ticks(streams=20, stalled=0, writes_s=0.3, opened=True)
    gap = ticks[1] - ticks[0]
    assert 0.28 <= gap < 0.5, gap  # written in 0.3 s; a rest comes only after a tick


class _ListStore:
    """A room's committed events in a list, read as the SQL store reads them (each naming the
    room's lifecycle event before it); counts the reads."""

    def __init__(self) -> None:
        self.events: list[RoomEvent] = []
        self.reads = 0

    def commit(self, kinds: list[EventKind]) -> list[RoomEvent]:
        """Append a commit's events; return them as a commit hands them (no chain)."""
        start = len(self.events) + 1
        new = [RoomEvent("room-1", start + i, NOW, k, _POOLS["a"]) for i, k in enumerate(kinds)]
        self.events.extend(new)
        return new

    @contextlib.asynccontextmanager
    async def transaction(self, write: bool = False) -> AsyncIterator[_ListStore]:
        yield self

    async def events_after(self, room_id: str, cursor: int, limit: int) -> list[RoomEvent]:
        self.reads += 1
        return self.chained(cursor)[:limit]

    def chained(self, cursor: int) -> list[RoomEvent]:
        previous, out = 0, []
        for event in self.events:
            if event.sequence > cursor:
                out.append(replace(event, previous_lifecycle=previous))
            if event.is_lifecycle:
                previous = event.sequence
        return out


async def _primed(store: _ListStore) -> RoomFeed:
    """A feed whose cache holds the store's events (1: the pool opened, 2 and 3: stock)."""
    store.commit([EventKind.POOL_OPENED, EventKind.STOCK_CHANGED, EventKind.STOCK_CHANGED])
    feed = RoomFeed("room-1", cast(Store, store), 3, 64)
    assert await feed.read_after(0) == store.chained(0)
    return feed


async def test_a_local_commits_events_continue_the_cache_and_are_not_read_back() -> None:
    store = _ListStore()
    feed = await _primed(store)
    reads = store.reads
    handed = store.commit(
        [EventKind.STOCK_CHANGED, EventKind.POOL_SOLD_OUT, EventKind.STOCK_CHANGED]
    )
    feed.notify(6, True, handed)
    got = await feed.read_after(3)
    assert got == store.chained(3)
    assert [e.previous_lifecycle for e in got] == [1, 1, 5]
    assert store.reads == reads, "the published events were read back from the store"


async def test_events_that_do_not_continue_the_cache_are_read_from_the_store() -> None:
    store = _ListStore()
    feed = await _primed(store)
    reads = store.reads
    store.commit([EventKind.STOCK_CHANGED])  # 4: another process's commit, not heard yet
    handed = store.commit([EventKind.POOL_CHANGED, EventKind.STOCK_CHANGED])
    feed.notify(6, True, handed)  # 5 and 6 would leave a gap after 3
    assert await feed.read_after(3) == store.chained(3)
    assert store.reads == reads + 1


_COMMITS = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_KINDS), min_size=1, max_size=3),  # the commit's events
        st.booleans(),  # committed by this process (handed over) or heard from another
        st.integers(min_value=0, max_value=3),  # a stream this far behind reads after it
    ),
    max_size=25,
)


@given(_COMMITS)
def test_what_a_stream_reads_is_what_the_store_holds_however_commits_reach_the_feed(
    commits: list[tuple[list[EventKind], bool, int]],
) -> None:
    async def run() -> None:
        store = _ListStore()
        feed = await _primed(store)
        for kinds, local, behind in commits:
            handed = store.commit(kinds)
            last = handed[-1].sequence
            feed.notify(last, any(e.is_lifecycle for e in handed), handed if local else ())
            cursor = max(0, last - len(handed) - behind)
            got = await feed.read_after(cursor)
            assert got, "a stream behind the last commit reads something"
            assert got == store.chained(cursor)[: len(got)]

    asyncio.run(run())
