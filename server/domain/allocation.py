"""The grab decision: who gets a coupon from a pool, and what a grant changes."""

from __future__ import annotations

from datetime import datetime

from server.domain.models import (
    AllocationResult,
    Coupon,
    EventDraft,
    EventKind,
    Outcome,
    Pool,
    PoolState,
)
from server.domain.pools import due_transitions

_REFUSALS = {
    PoolState.SCHEDULED: Outcome.NOT_OPEN_YET,
    PoolState.CLOSED: Outcome.CLOSED,
    PoolState.SOLD_OUT: Outcome.SOLD_OUT,
}


def refusal(pool: Pool, viewer_grants: int, now: datetime) -> AllocationResult | None:
    """The expected answer that refuses this grab, or None if a coupon may be granted."""
    state = pool.state_at(now)
    outcome = _REFUSALS.get(state)
    if outcome is None and viewer_grants >= pool.per_viewer_limit:
        outcome = Outcome.LIMIT_REACHED
    if outcome is None:
        return None
    # Positional: built for every refusal, and keywords cost a NamedTuple twice as much.
    return AllocationResult(
        outcome,
        pool.remaining_quantity,
        now,
        pool.claim_start if outcome is Outcome.NOT_OPEN_YET else None,
    )


def grant(
    pool: Pool, viewer_id: str, coupon_id: str, code: str, now: datetime
) -> tuple[Pool, Coupon, list[EventDraft]]:
    """Take one coupon from an open pool for a viewer; the events it emits."""
    pool, events = due_transitions(pool, now)
    after = pool.with_changes(
        remaining_quantity=pool.remaining_quantity - 1, granted_quantity=pool.granted_quantity + 1
    )
    events.append(EventDraft(EventKind.STOCK_CHANGED, after))
    if after.remaining_quantity == 0:
        after = after.with_changes(announced_state=PoolState.SOLD_OUT)
        events.append(EventDraft(EventKind.POOL_SOLD_OUT, after))
    coupon = Coupon(
        coupon_id=coupon_id,
        code=code,
        pool_id=pool.pool_id,
        room_id=pool.room_id,
        viewer_id=viewer_id,
        terms=pool.terms,
        target=pool.target,
        currency_code=pool.currency_code,
        valid_from=now,
        valid_until=pool.validity.end_for_grant(now),
        grant_sequence=after.granted_quantity,
        stackable=pool.stackable,
    )
    return after, coupon, events
