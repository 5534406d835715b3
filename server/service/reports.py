"""The streamer's view of a pool: its winner list and its live counts."""

from __future__ import annotations

from server.domain.errors import FieldViolation, InvalidArgument, NotFound
from server.domain.models import Coupon, Pool, PoolStats, Principal, Role
from server.domain.validation import check_id, check_range
from server.service.access import require_role
from server.service.context import ServiceContext
from server.service.rooms import owned_room
from server.store.interface import Transaction

DEFAULT_GRANTS_PAGE = 100
MAX_GRANTS_PAGE = 1000


async def _pool(tx: Transaction, room_id: str, pool_id: str) -> Pool:
    pool = await tx.get_pool(pool_id)
    if pool is None or pool.room_id != room_id:
        raise NotFound("pool", pool_id)
    return pool


def _check_pool_id(pool_id: str, out: list[FieldViolation]) -> None:
    check_id(pool_id, "pool_id", out)


async def pool_stats(
    ctx: ServiceContext, principal: Principal, room_id: str, pool_id: str
) -> PoolStats:
    """A pool's counts now; they add up to its total (see PoolStats)."""
    require_role(principal, Role.STREAMER)
    await owned_room(ctx, principal, room_id)
    out: list[FieldViolation] = []
    _check_pool_id(pool_id, out)
    if out:
        raise InvalidArgument(out)
    async with ctx.store.transaction(write=False) as tx:
        now = ctx.clock()
        pool = await _pool(tx, room_id, pool_id)
        counts = await tx.pool_stats(pool_id, now)
    return PoolStats(
        pool_id=pool_id,
        total_quantity=pool.total_quantity,
        remaining_quantity=pool.remaining_quantity,
        held_quantity=counts.get("held", 0),
        locked_quantity=counts.get("locked", 0),
        redeemed_quantity=counts.get("redeemed", 0),
        released_quantity=counts.get("released", 0),
        expired_quantity=counts.get("expired", 0),
        withdrawn_quantity=pool.withdrawn_quantity,
        server_time=now,
    )


def _page_after(token: str) -> int:
    try:
        after = int(token)
        if not 0 < after < 2**63:
            raise ValueError("out of range")
        return after
    except ValueError as exc:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token this server gave")]
        ) from exc


async def list_grants(
    ctx: ServiceContext,
    principal: Principal,
    room_id: str,
    pool_id: str,
    page_size: int,
    page_token: str,
) -> tuple[list[Coupon], str]:
    """A pool's grants in the order decided, one page at a time; the token of the next."""
    require_role(principal, Role.STREAMER)
    await owned_room(ctx, principal, room_id)
    out: list[FieldViolation] = []
    _check_pool_id(pool_id, out)
    check_range(page_size, (0, MAX_GRANTS_PAGE), "page_size", out)
    if out:
        raise InvalidArgument(out)
    after = _page_after(page_token) if page_token else 0
    size = page_size or DEFAULT_GRANTS_PAGE
    async with ctx.store.transaction(write=False) as tx:
        await _pool(tx, room_id, pool_id)
        found = await tx.list_grants(pool_id, after, size + 1)
    page = found[:size]
    # The last page so far ends the listing; grants made later follow a new call.
    return page, str(page[-1].grant_sequence) if len(found) > size else ""
