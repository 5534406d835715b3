"""Many viewers racing for few coupons, with retries: exact totals, limits and idempotency."""

from __future__ import annotations

import asyncio
import collections

from sqlalchemy import text

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from tests.conftest import ClientFactory, RoomMaker, ServerHandle
from tests.support import fixed_pool, new_request_id

VIEWERS = 200
COUPONS = 50
LIMIT = 2


async def test_200_viewers_racing_for_50_coupons_with_retries(
    server: ServerHandle, make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=COUPONS, limit=LIMIT)
        )
    ).pool
    viewers = [clients("viewer", f"racer-{i:03d}") for i in range(VIEWERS)]

    async def tap(i: int) -> list[tuple[int, svc.AllocateResponse]]:
        # Every viewer taps three times (one more than the limit), and every tap is sent
        # twice at once with the same request_id, as an app retrying on a flaky network does.
        answers = []
        for _ in range(LIMIT + 1):
            request_id = new_request_id()
            pair = await asyncio.gather(
                viewers[i].allocate(pool.pool_id, request_id=request_id),
                viewers[i].allocate(pool.pool_id, request_id=request_id),
            )
            assert pair[0] == pair[1], "a retry must get the same answer"
            answers.append((i, pair[0]))
        return answers

    results = [
        a for batch in await asyncio.gather(*(tap(i) for i in range(VIEWERS))) for a in batch
    ]
    granted = [(i, r.coupon) for i, r in results if r.outcome == svc.ALLOCATION_OUTCOME_GRANTED]
    assert len(granted) == COUPONS
    codes = [c.code for _, c in granted]
    assert len(set(codes)) == COUPONS, "coupon codes are unique"
    per_viewer = collections.Counter(i for i, _ in granted)
    assert max(per_viewer.values()) <= LIMIT
    outcomes = collections.Counter(r.outcome for _, r in results)
    assert set(outcomes) <= {
        svc.ALLOCATION_OUTCOME_GRANTED,
        svc.ALLOCATION_OUTCOME_SOLD_OUT,
        svc.ALLOCATION_OUTCOME_LIMIT_REACHED,
    }
    for i, coupon in granted:
        assert coupon.viewer_id == f"racer-{i:03d}"
    stats = await room.streamer.get_pool_stats(room.room_id, pool.pool_id)
    assert (stats.total_quantity, stats.remaining_quantity, stats.held_quantity) == (
        COUPONS,
        0,
        COUPONS,
    )
    winners = (await room.streamer.list_pool_grants(room.room_id, pool.pool_id)).grants
    assert [g.sequence for g in winners] == list(range(1, COUPONS + 1))
    assert sorted(g.coupon_id for g in winners) == sorted(c.coupon_id for _, c in granted)

    # The store agrees: every grant recorded once, conservation holds, nobody over the limit.
    async with server.running.store.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT total_quantity, remaining_quantity, granted_quantity FROM pools "
                    "WHERE pool_id = :p"
                ),
                {"p": pool.pool_id},
            )
        ).one()
        assert tuple(row) == (COUPONS, 0, COUPONS)
        stored = (
            (
                await conn.execute(
                    text("SELECT code FROM coupons WHERE pool_id = :p"), {"p": pool.pool_id}
                )
            )
            .scalars()
            .all()
        )
        assert sorted(stored) == sorted(codes)
        worst = (
            await conn.execute(
                text(
                    "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM coupons WHERE pool_id = :p "
                    "GROUP BY viewer_id) AS counts"
                ),
                {"p": pool.pool_id},
            )
        ).scalar_one()
        assert worst <= LIMIT
