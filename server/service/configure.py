"""ConfigureResources: create a pool, add stock, change its window, stop it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from server.domain import pools as rules
from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.models import Pool, PoolSpec, Principal, Role, Room
from server.domain.validation import check_id, check_request_id
from server.service.access import require_role
from server.service.context import ServiceContext, replay
from server.service.ids import new_pool_id
from server.service.rooms import owned_room
from server.store import codec
from server.store.interface import IdempotencyKey, Transaction


@dataclass(frozen=True, slots=True)
class CreatePoolOp:
    """Create a pool from a spec."""

    spec: PoolSpec


@dataclass(frozen=True, slots=True)
class AddStockOp:
    """Add stock to a pool."""

    pool_id: str
    expected_version: int
    quantity: int


@dataclass(frozen=True, slots=True)
class UpdateWindowOp:
    """Change a pool's claim window."""

    pool_id: str
    expected_version: int
    claim_start: datetime | None
    claim_end: datetime | None


@dataclass(frozen=True, slots=True)
class StopPoolOp:
    """Stop a pool early."""

    pool_id: str
    expected_version: int


@dataclass(frozen=True, slots=True)
class PinPoolOp:
    """Pin a pool (unpinning the room's other one)."""

    pool_id: str
    expected_version: int


@dataclass(frozen=True, slots=True)
class UnpinPoolOp:
    """Unpin a pool."""

    pool_id: str
    expected_version: int


@dataclass(frozen=True, slots=True)
class ResendPoolOp:
    """Open a closed pool again as a new round."""

    pool_id: str
    expected_version: int
    claim_end: datetime | None


ConfigureOp = (
    CreatePoolOp | AddStockOp | UpdateWindowOp | StopPoolOp | PinPoolOp | UnpinPoolOp | ResendPoolOp
)

# Request field names of each operation, for error details.
_FIELD = {
    CreatePoolOp: "create_pool",
    AddStockOp: "add_stock",
    UpdateWindowOp: "update_claim_window",
    StopPoolOp: "stop_pool",
    PinPoolOp: "pin_pool",
    UnpinPoolOp: "unpin_pool",
    ResendPoolOp: "resend_pool",
}


async def configure(
    ctx: ServiceContext,
    principal: Principal,
    room_id: str,
    key: IdempotencyKey,
    build: Callable[[], ConfigureOp],
    on_change: Callable[[str], None] = lambda pool_id: None,
) -> Pool:
    """Carry out one configuration operation in a room the caller owns.

    `build` turns the request into an operation; it runs only after the caller is
    authorised, so an unauthorised caller learns nothing about its request's validity.
    """
    require_role(principal, Role.STREAMER)
    room = await owned_room(ctx, principal, room_id)
    out: list[FieldViolation] = []
    check_request_id(key.request_id, "request_id", out)
    if out:
        raise InvalidArgument(out)
    op = build()
    async with ctx.store.transaction(write=True) as tx:
        recorded = await replay(tx, key)
        if recorded is not None:
            return codec.pool_from_json(recorded)
        now = ctx.clock()
        pool = await _apply(ctx, tx, room, op, now)
        await tx.put_answers([(key, codec.pool_to_json(pool))], now)
    on_change(pool.pool_id)
    return pool


async def _apply(
    ctx: ServiceContext, tx: Transaction, room: Room, op: ConfigureOp, now: datetime
) -> Pool:
    prefix = _FIELD[type(op)]
    if isinstance(op, CreatePoolOp):
        rules.validate_spec(op.spec, room, ctx.limits, now, prefix)
        pool, event = rules.new_pool(op.spec, room, new_pool_id(), now)
        await tx.insert_pool(pool)
        await tx.append_events(room.room_id, [event], now)
        return pool
    out: list[FieldViolation] = []
    check_id(op.pool_id, f"{prefix}.pool_id", out)
    if out:
        raise InvalidArgument(out)
    if isinstance(op, PinPoolOp):
        return await _pin(tx, room, op, now)
    current = await tx.get_pool(op.pool_id, for_update=True)
    if current is None or current.room_id != room.room_id:
        raise NotFound("pool", op.pool_id)
    # Announce what the clock already changed, so events stay in causal order.
    current, events = rules.due_transitions(current, now)
    if isinstance(op, UnpinPoolOp):
        changed, more = rules.unpin(current, op.expected_version, now)
    elif isinstance(op, ResendPoolOp):
        changed, more = rules.resend(
            current, op.expected_version, op.claim_end, ctx.limits, now, prefix
        )
    elif isinstance(op, AddStockOp):
        changed, more = rules.add_stock(
            current, op.quantity, op.expected_version, ctx.limits, now, f"{prefix}.quantity"
        )
    elif isinstance(op, UpdateWindowOp):
        changed, more = rules.update_window(
            current, op.claim_start, op.claim_end, op.expected_version, ctx.limits, now, prefix
        )
    else:
        changed, more = rules.stop(current, op.expected_version, now)
    await tx.update_pool(changed)
    await tx.append_events(room.room_id, events + more, now)
    return changed


async def _pin(tx: Transaction, room: Room, op: PinPoolOp, now: datetime) -> Pool:
    """Pin a pool; the room's pinned pool, if another, is unpinned in the same commit.

    Pins of one room queue on a lock, so two pools are never pinned at once; the pools
    involved are then locked together in key order, as the grab path locks them.
    """
    await tx.lock_pins(room.room_id)
    pinned = [p.pool_id for p in await tx.live_pools(room.room_id) if p.pinned]
    locked = {p.pool_id: p for p in await tx.get_pools([op.pool_id, *pinned], for_update=True)}
    current = locked.get(op.pool_id)
    if current is None or current.room_id != room.room_id:
        raise NotFound("pool", op.pool_id)
    current, events = rules.due_transitions(current, now)
    others = [p for pool_id, p in locked.items() if pool_id != op.pool_id and p.pinned]
    changed, more = rules.pin(current, op.expected_version, others, now)
    if events and all(p.pool_id != current.pool_id for p in changed):
        changed.append(current)  # the clock's transition, announced below
    await tx.update_pools(sorted(changed, key=lambda p: p.pool_id))
    await tx.append_events(room.room_id, events + more, now)
    return next((p for p in changed if p.pool_id == op.pool_id), current)
