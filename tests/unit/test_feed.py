"""What a coalesced batch keeps: every lifecycle event in order, and for each pool only the
stock changes no later stock change or sell-out of that pool supersedes. And the feed's
heartbeat wheel: one timer per room, deadlines per stream."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from server.domain.models import EventKind, RoomEvent
from server.streaming.feed import HEARTBEAT_SLOT_S, _HeartbeatWheel, coalesce
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
