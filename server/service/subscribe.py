"""StreamAllocationInfo: a room's snapshot, then its events in order, with heartbeats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from server.domain.errors import FieldViolation, InvalidArgument, NotFound, Unavailable
from server.domain.models import (
    EligibilityUpdate,
    EventKind,
    Heartbeat,
    Pool,
    PoolState,
    Principal,
    Role,
    RoomEvent,
    RoomSnapshot,
    SnapshotMessage,
    SnapshotReason,
    SubscriptionItem,
)
from server.domain.validation import check_id
from server.service.context import ServiceContext
from server.service.eligibility import EligibilityDesk
from server.service.shielding import finish_even_if_cancelled
from server.store.interface import EventBounds
from server.streaming.feed import FeedRegistry, RoomFeed

Out = TypeVar("Out")


async def _read_snapshot(
    ctx: ServiceContext, room_id: str
) -> tuple[list[Pool], EventBounds | None]:
    async with ctx.store.transaction(write=False) as tx:
        return await tx.live_pools(room_id), await tx.event_bounds(room_id)


async def _read_bounds(ctx: ServiceContext, room_id: str) -> EventBounds | None:
    async with ctx.store.transaction(write=False) as tx:
        return await tx.event_bounds(room_id)


async def _snapshot(ctx: ServiceContext, feed: RoomFeed, reason: SnapshotReason) -> SnapshotMessage:
    room_id = feed.room_id
    pools, bounds = await feed.snapshot_state(
        lambda: finish_even_if_cancelled(_read_snapshot(ctx, room_id))
    )
    if bounds is None:
        raise NotFound("room", room_id)
    now = ctx.clock()
    live = tuple(p for p in pools if p.state_at(now) is not PoolState.CLOSED)
    return SnapshotMessage(RoomSnapshot(room_id, live, bounds.last, now), reason)


# Events after which a viewer is told their eligibility for the pool (if it has a rule).
_ELIGIBILITY_EVENTS = frozenset(
    {EventKind.POOL_SCHEDULED, EventKind.POOL_OPENED, EventKind.POOL_CHANGED, EventKind.POOL_RESENT}
)


class _Viewer:
    """What a stream does for the viewer behind it: counts their watch time and tells them
    their eligibility. Other callers' streams skip all of it."""

    def __init__(self, desk: EligibilityDesk | None, principal: Principal, room_id: str) -> None:
        self.desk = desk if principal.role is Role.VIEWER else None
        self.principal = principal
        self.room_id = room_id

    def joined(self) -> None:
        if self.desk is not None:
            self.desk.watch.opened(self.room_id, self.principal.subject)

    def left(self) -> None:
        if self.desk is not None:
            self.desk.watch.closed(self.room_id, self.principal.subject)

    async def snapshot(self, snap: SnapshotMessage) -> SnapshotMessage:
        if self.desk is None or not any(p.eligibility.restricts for p in snap.snapshot.pools):
            return snap
        found = await self.desk.for_pools(self.principal, snap.snapshot.pools)
        return replace(snap, eligibility=found)

    def concerned(self, event: RoomEvent) -> bool:
        """Whether the viewer is told their eligibility after `event`."""
        return (
            self.desk is not None
            and event.kind in _ELIGIBILITY_EVENTS
            and event.pool.eligibility.restricts
        )

    async def after(self, event: RoomEvent, ctx: ServiceContext) -> EligibilityUpdate:
        assert self.desk is not None
        found = await self.desk.for_pools(self.principal, [event.pool])
        return EligibilityUpdate(found, ctx.clock())


async def subscribe(
    ctx: ServiceContext,
    feeds: FeedRegistry,
    principal: Principal,
    room_id: str,
    resume_after: int,
    heartbeat_seconds: float,
    max_lag_events: int = 2048,
    eligibility: EligibilityDesk | None = None,
    *,
    render: Callable[[SubscriptionItem], Out],
    send: Callable[[Out], Awaitable[object]],
) -> None:
    """Send the room's allocation info: a snapshot or the missed events, then live events.

    Any authenticated caller may subscribe. Sequence numbers delivered only grow; the numbers
    skipped are stock changes superseded by a later one or a sell-out of the same pool
    (coalescing), never lifecycle events. A stream that, once caught up, falls more than
    `max_lag_events` behind the published events is sent a LAGGING snapshot instead of the
    backlog.

    Every item is sent as `await send(render(item))` (the API layer renders its wire
    message and writes it): a stream is this one coroutine, with no generator per layer.
    Returns only by raising: Unavailable when the server shuts down, or the cancellation.
    """
    # Rooms are public to every authenticated caller.
    out: list[FieldViolation] = []
    check_id(room_id, "room_id", out)
    if resume_after < 0:
        out.append(FieldViolation("resume_after_sequence", "must not be negative"))
    if out:
        raise InvalidArgument(out)
    known = feeds.get(room_id)
    if known is not None and resume_after == 0:
        # The room has subscribers here, so it exists: a crowd joining costs no store read.
        feed = feeds.join(room_id, known.known_last)
        bounds = EventBounds(0, known.known_last)
    else:
        read = await finish_even_if_cancelled(_read_bounds(ctx, room_id))
        if read is None:
            raise NotFound("room", room_id)
        bounds = read
        feed = feeds.join(room_id, bounds.last)
    viewer = _Viewer(eligibility, principal, room_id)
    viewer.joined()
    try:
        if resume_after == 0 or resume_after > bounds.last:
            reason = SnapshotReason.INITIAL if resume_after == 0 else SnapshotReason.RESUME_UNKNOWN
            snap = await viewer.snapshot(await _snapshot(ctx, feed, reason))
            await send(render(snap))
            cursor = snap.snapshot.sequence
        elif resume_after < bounds.first_retained - 1:
            snap = await viewer.snapshot(await _snapshot(ctx, feed, SnapshotReason.RESUME_TOO_OLD))
            await send(render(snap))
            cursor = snap.snapshot.sequence
        else:
            cursor = resume_after
        # A resuming stream catches up from the store however far back it starts; once it has
        # reached the published end, falling too far behind again gets it a snapshot.
        live = False
        while not feeds.closed:
            if live and feed.behind(cursor, max_lag_events):
                snap = await viewer.snapshot(await _snapshot(ctx, feed, SnapshotReason.LAGGING))
                await send(render(snap))
                cursor = snap.snapshot.sequence
                continue
            # Taken before the read: events published by then must be readable, so an empty
            # read despite them means they were pruned. (Checking after the read would
            # mistake a commit that lands during the read for a prune.)
            published = feed.published
            events = feed.batch_after(cursor)
            if events is None:
                events = await feed.read_coalesced(cursor)
            if events:
                for event in events:
                    if live and feed.behind(cursor, max_lag_events):
                        break
                    await send(render(event))
                    cursor = event.sequence
                    if viewer.concerned(event):
                        await send(render(await viewer.after(event, ctx)))
                continue
            if published > cursor:
                # Committed events we cannot read were pruned while we lagged: resync.
                snap = await viewer.snapshot(
                    await _snapshot(ctx, feed, SnapshotReason.RESUME_TOO_OLD)
                )
                await send(render(snap))
                cursor = snap.snapshot.sequence
                continue
            live = True
            if not await feed.wait_past(cursor, heartbeat_seconds) and not feeds.closed:
                await send(render(Heartbeat(ctx.clock(), cursor)))
    finally:
        viewer.left()
        feeds.leave(feed)
    raise Unavailable(
        "the server is shutting down; reconnect with resume_after_sequence", reason="SHUTTING_DOWN"
    )
