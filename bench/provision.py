"""Set-up as a real client does it: the platform registers rooms, the streamer creates pools."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import duration_pb2

from client_sdk.tokens import mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from generated.liveresource.v1 import resources_pb2 as res

STREAMER = "bench-streamer"
PER_VIEWER_LIMIT = 1
VALID_FOR_SECONDS = 1800


class Provisioner:
    """Creates fresh rooms and open pools on one server (one channel, tokens minted once)."""

    def __init__(self, target: str, token_key: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = svc_grpc.ResourceAllocationServiceStub(self._channel)
        self._platform = _auth(mint_token("bench-platform", "platform", key=token_key))
        self._streamer = _auth(mint_token(STREAMER, "streamer", key=token_key))

    def close(self) -> None:
        self._channel.close()

    def pool(self, room_id: str, total: int) -> str:
        """Register `room_id` and create one pool of `total` coupons open now; its pool_id."""
        return self.pools([room_id], total)[0]

    def pools(self, room_ids: list[str], total: int) -> list[str]:
        """Register each room and create one pool of `total` in it, all rooms concurrently."""
        registered = [
            self._stub.RegisterRoom.future(
                svc.RegisterRoomRequest(request_id=str(uuid.uuid4()), room=_room(room_id)),
                metadata=self._platform,
                timeout=60,
            )
            for room_id in room_ids
        ]
        for call in registered:
            call.result()
        created = [
            self._stub.ConfigureResources.future(
                svc.ConfigureResourcesRequest(
                    request_id=str(uuid.uuid4()),
                    room_id=room_id,
                    create_pool=create_pool_message(room_id, total),
                ),
                metadata=self._streamer,
                timeout=60,
            )
            for room_id in room_ids
        ]
        return [str(call.result().pool.pool_id) for call in created]


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _room(room_id: str) -> res.Room:
    return res.Room(
        room_id=room_id,
        streamer_id=STREAMER,
        currency_code="CNY",
        featured_goods=[res.Goods(goods_id=f"{room_id}-tea", shop_id="shop-a", title="Tea")],
    )


def create_pool_message(room_id: str, total: int) -> svc.CreatePool:
    return svc.CreatePool(
        title="Bench coupon",
        terms=res.CouponTerms(
            kind=res.COUPON_KIND_FIXED_AMOUNT, amount_off_minor=1000, min_spend_minor=0
        ),
        target=res.TargetGoods(goods_ids=[f"{room_id}-tea"]),
        total_quantity=total,
        per_viewer_limit=PER_VIEWER_LIMIT,
        validity=res.CouponValidity(valid_for=duration_pb2.Duration(seconds=VALID_FOR_SECONDS)),
    )
