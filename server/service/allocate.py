"""Allocate: a viewer's grab, decided and recorded in one transaction."""

from __future__ import annotations

from server.domain import allocation
from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.models import AllocationResult, Outcome, Principal, Role
from server.domain.pools import due_transitions
from server.domain.validation import check_id, check_request_id
from server.service.access import require_role
from server.service.context import ServiceContext, replay
from server.service.ids import new_coupon_code, new_coupon_id
from server.store import codec
from server.store.interface import IdempotencyKey, NewCoupon


def check_grab(principal: Principal, key: IdempotencyKey, pool_id: str) -> None:
    """A grab's checks, shared by both grab paths: the viewer role, then its fields."""
    require_role(principal, Role.VIEWER)
    out: list[FieldViolation] = []
    check_request_id(key.request_id, "request_id", out)
    check_id(pool_id, "pool_id", out)
    if out:
        raise InvalidArgument(out)


async def allocate(
    ctx: ServiceContext, principal: Principal, key: IdempotencyKey, pool_id: str
) -> AllocationResult:
    """Grant the calling viewer a coupon from the pool, or say why not (one transaction).

    Every answer, refusals included, is recorded under the request_id, so a retry gets
    the same answer and never a second coupon.
    """
    check_grab(principal, key, pool_id)
    viewer_id = principal.subject
    async with ctx.store.transaction(write=True) as tx:
        recorded = await replay(tx, key)
        if recorded is not None:
            return codec.allocation_from_json(recorded)
        pool = await tx.get_pool(pool_id, for_update=True)
        if pool is None:
            raise NotFound("pool", pool_id)
        now = ctx.clock()
        held = await tx.count_grants(pool_id, viewer_id)
        result = allocation.refusal(pool, held, now)
        if result is None:
            after, coupon, events = allocation.grant(
                pool, viewer_id, new_coupon_id(), new_coupon_code(), now
            )
            await tx.update_pool(after)
            await tx.insert_coupons(
                [NewCoupon(coupon, key.request_id, held + 1, pool.per_viewer_limit)]
            )
            await tx.append_events(pool.room_id, events, now)
            result = AllocationResult(
                outcome=Outcome.GRANTED,
                remaining_quantity=after.remaining_quantity,
                server_time=now,
                coupon=coupon,
            )
        else:
            announced, events = due_transitions(pool, now)
            if events:
                await tx.update_pool(announced)
                await tx.append_events(pool.room_id, events, now)
        await tx.put_answers([(key, codec.allocation_to_json(result))], now)
        return result
