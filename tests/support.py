"""Builders and constants shared by the integration tests."""

from __future__ import annotations

import asyncio
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


class TcpProxy:
    """A loopback TCP proxy whose connections a test can cut, like a phone losing its network."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def drop_connections(self) -> None:
        """Cut every open connection at once (new ones are accepted again)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
