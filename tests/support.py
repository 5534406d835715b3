"""Builders and constants shared by the integration tests."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res

TOKEN_KEY = "tests-" + secrets.token_urlsafe(24)
CURRENCY = "CNY"


def unique(prefix: str) -> str:
    """A fresh identifier, so tests sharing one server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_request_id() -> str:
    return str(uuid.uuid4())


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def now() -> datetime:
    return datetime.now(UTC)


def room_message(room_id: str, streamer_id: str) -> res.Room:
    """A room with two featured goods (one from a linked shop) and one linked shop."""
    return res.Room(
        room_id=room_id,
        streamer_id=streamer_id,
        currency_code=CURRENCY,
        featured_goods=[
            res.Goods(goods_id=f"{room_id}-tea", shop_id="shop-a", title="Tea"),
            res.Goods(goods_id=f"{room_id}-cup", shop_id="shop-b", title="Cup"),
        ],
        linked_shops=[
            res.Shop(
                shop_id="shop-b",
                name="Cups",
                goods=[
                    res.Goods(goods_id=f"{room_id}-cup", title="Cup"),
                    res.Goods(goods_id=f"{room_id}-saucer", title="Saucer"),
                ],
            )
        ],
    )


def fixed_pool(
    room_id: str,
    *,
    total: int = 10,
    limit: int = 1,
    amount_off: int = 2000,
    min_spend: int = 0,
    valid_for: int = 1800,
    start: datetime | None = None,
    end: datetime | None = None,
) -> svc.CreatePool:
    """A fixed-amount pool on the room's tea."""
    pool = svc.CreatePool(
        title="20 off tea",
        terms=res.CouponTerms(
            kind=res.COUPON_KIND_FIXED_AMOUNT,
            amount_off_minor=amount_off,
            min_spend_minor=min_spend,
        ),
        target=res.TargetGoods(goods_ids=[f"{room_id}-tea"]),
        total_quantity=total,
        per_viewer_limit=limit,
        validity=res.CouponValidity(valid_for=duration(valid_for)),
    )
    if start is not None:
        pool.claim_start_time.CopyFrom(ts(start))
    if end is not None:
        pool.claim_end_time.CopyFrom(ts(end))
    return pool


def later(seconds: float) -> datetime:
    return now() + timedelta(seconds=seconds)
