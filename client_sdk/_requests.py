"""Builds each RPC's request message from the clients' keyword arguments, once for both clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2
from generated.liveresource.v1 import resources_pb2


def new_request_id() -> str:
    """A fresh idempotency key; the caller reuses it on every retry of the same write."""
    return str(uuid.uuid4())


def register_room(room: resources_pb2.Room, request_id: str | None) -> svc_pb2.RegisterRoomRequest:
    return svc_pb2.RegisterRoomRequest(request_id=request_id or new_request_id(), room=room)


def get_configuration_options(room_id: str) -> svc_pb2.GetConfigurationOptionsRequest:
    return svc_pb2.GetConfigurationOptionsRequest(room_id=room_id)


def configure_resources(
    room_id: str,
    *,
    create_pool: svc_pb2.CreatePool | None,
    add_stock: svc_pb2.AddStock | None,
    update_claim_window: svc_pb2.UpdateClaimWindow | None,
    stop_pool: svc_pb2.StopPool | None,
    pin_pool: svc_pb2.PinPool | None = None,
    unpin_pool: svc_pb2.UnpinPool | None = None,
    resend_pool: svc_pb2.ResendPool | None = None,
    request_id: str | None,
) -> svc_pb2.ConfigureResourcesRequest:
    operations = {
        "create_pool": create_pool,
        "add_stock": add_stock,
        "update_claim_window": update_claim_window,
        "stop_pool": stop_pool,
        "pin_pool": pin_pool,
        "unpin_pool": unpin_pool,
        "resend_pool": resend_pool,
    }
    given = [name for name, op in operations.items() if op is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of " + ", ".join(operations))
    request = svc_pb2.ConfigureResourcesRequest(
        request_id=request_id or new_request_id(), room_id=room_id
    )
    getattr(request, given[0]).CopyFrom(operations[given[0]])
    return request


def allocate(pool_id: str, request_id: str | None) -> svc_pb2.AllocateRequest:
    return svc_pb2.AllocateRequest(request_id=request_id or new_request_id(), pool_id=pool_id)


def list_coupons(room_id: str, page_size: int, page_token: str) -> svc_pb2.ListCouponsRequest:
    return svc_pb2.ListCouponsRequest(room_id=room_id, page_size=page_size, page_token=page_token)


def redeem_coupon(
    order_id: str,
    coupon_code: str,
    viewer_id: str,
    currency_code: str,
    lines: Iterable[resources_pb2.OrderLine],
) -> svc_pb2.RedeemCouponRequest:
    return svc_pb2.RedeemCouponRequest(
        order_id=order_id,
        coupon_code=coupon_code,
        viewer_id=viewer_id,
        currency_code=currency_code,
        lines=lines,
    )


def release_coupon(
    order_id: str, reason: resources_pb2.ReleaseReason.ValueType
) -> svc_pb2.ReleaseCouponRequest:
    return svc_pb2.ReleaseCouponRequest(order_id=order_id, reason=reason)


def lock_coupon(
    order_id: str,
    coupon_code: str,
    viewer_id: str,
    currency_code: str,
    lines: Iterable[resources_pb2.OrderLine],
) -> svc_pb2.LockCouponRequest:
    return svc_pb2.LockCouponRequest(
        order_id=order_id,
        coupon_code=coupon_code,
        viewer_id=viewer_id,
        currency_code=currency_code,
        lines=lines,
    )


def confirm_coupons(order_id: str) -> svc_pb2.ConfirmCouponsRequest:
    return svc_pb2.ConfirmCouponsRequest(order_id=order_id)


def refund_coupons(order_id: str, full: bool) -> svc_pb2.RefundCouponsRequest:
    kind = svc_pb2.REFUND_KIND_FULL if full else svc_pb2.REFUND_KIND_PARTIAL
    return svc_pb2.RefundCouponsRequest(order_id=order_id, kind=kind)


def list_pool_grants(
    room_id: str, pool_id: str, page_size: int, page_token: str
) -> svc_pb2.ListPoolGrantsRequest:
    return svc_pb2.ListPoolGrantsRequest(
        room_id=room_id, pool_id=pool_id, page_size=page_size, page_token=page_token
    )


def get_pool_stats(room_id: str, pool_id: str) -> svc_pb2.GetPoolStatsRequest:
    return svc_pb2.GetPoolStatsRequest(room_id=room_id, pool_id=pool_id)


def stream_allocation_info(
    room_id: str, resume_after_sequence: int
) -> svc_pb2.StreamAllocationInfoRequest:
    return svc_pb2.StreamAllocationInfoRequest(
        room_id=room_id, resume_after_sequence=resume_after_sequence
    )
