"""AsyncLiveResourceClient: the asyncio client, one method per RPC, with retries."""

# ASYNC109 prefers asyncio.timeout(), but a gRPC timeout becomes a deadline the server sees too.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import grpc.aio

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc_pb2
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from generated.liveresource.v1 import resources_pb2

from . import _requests
from ._channel import open_channel
from ._metadata import Metadata, call_metadata
from ._resume import ResumeState
from ._retry import Retrier
from .config import ClientConfig
from .errors import RETRYABLE_CODES, from_rpc_error
from .subscription import RoomSubscription

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from generated.liveresource.v1.resource_allocation_service_pb2_grpc import (
        ResourceAllocationServiceAsyncStub,
    )

_Response = TypeVar("_Response")


class AsyncLiveResourceClient:
    """Calls liveresource.v1.ResourceAllocationService from asyncio code.

    ::

        async with AsyncLiveResourceClient(ClientConfig(target=..., token=...)) as client:
            answer = await client.allocate(pool_id)

    Methods return the response protobuf messages and raise LiveResourceError subclasses. Unary
    calls are retried on RETRYABLE_CODES per ClientConfig.retry within their timeout (default
    ClientConfig.timeout, covering every attempt); writes send the same request_id on every
    attempt, generated when not given, so a retry never applies a write twice. ``metadata`` adds
    entries to a call (an ``authorization`` entry replaces the configured token).
    """

    def __init__(self, config: ClientConfig, *, channel: grpc.aio.Channel | None = None) -> None:
        """Open a channel to ``config.target``, or use ``channel`` (which close() leaves open)."""
        self.config = config
        self._owns_channel = channel is None
        self.channel: grpc.aio.Channel = (
            open_channel(grpc.aio, config) if channel is None else channel
        )
        # The generated stub's overloads cannot tell an aio channel from a sync one here.
        self.stub = cast(
            "ResourceAllocationServiceAsyncStub",
            svc_grpc.ResourceAllocationServiceStub(self.channel),
        )
        self._subscriptions: weakref.WeakSet[RoomSubscription] = weakref.WeakSet()

    async def close(self) -> None:
        """Close every subscription, then the channel if the client opened it."""
        for subscription in list(self._subscriptions):
            subscription.close()
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> AsyncLiveResourceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def register_room(
        self,
        room: resources_pb2.Room,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.RegisterRoomResponse:
        """Register a live room (platform only)."""
        request = _requests.register_room(room, request_id)
        return await self._unary(
            self.stub.RegisterRoom, request, svc_pb2.RegisterRoomResponse, timeout, metadata
        )

    async def get_configuration_options(
        self,
        room_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.GetConfigurationOptionsResponse:
        """Return the options a pool of the room must respect (the room's streamer only)."""
        request = _requests.get_configuration_options(room_id)
        return await self._unary(
            self.stub.GetConfigurationOptions,
            request,
            svc_pb2.GetConfigurationOptionsResponse,
            timeout,
            metadata,
        )

    async def configure_resources(
        self,
        room_id: str,
        *,
        create_pool: svc_pb2.CreatePool | None = None,
        add_stock: svc_pb2.AddStock | None = None,
        update_claim_window: svc_pb2.UpdateClaimWindow | None = None,
        stop_pool: svc_pb2.StopPool | None = None,
        pin_pool: svc_pb2.PinPool | None = None,
        unpin_pool: svc_pb2.UnpinPool | None = None,
        resend_pool: svc_pb2.ResendPool | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.ConfigureResourcesResponse:
        """Apply exactly one pool operation in the room (the room's streamer only)."""
        request = _requests.configure_resources(
            room_id,
            create_pool=create_pool,
            add_stock=add_stock,
            update_claim_window=update_claim_window,
            stop_pool=stop_pool,
            pin_pool=pin_pool,
            unpin_pool=unpin_pool,
            resend_pool=resend_pool,
            request_id=request_id,
        )
        return await self._unary(
            self.stub.ConfigureResources,
            request,
            svc_pb2.ConfigureResourcesResponse,
            timeout,
            metadata,
        )

    async def allocate(
        self,
        pool_id: str,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.AllocateResponse:
        """Grab a coupon from the pool (viewer only); a lost race is an outcome, not an error."""
        request = _requests.allocate(pool_id, request_id)
        return await self._unary(
            self.stub.Allocate, request, svc_pb2.AllocateResponse, timeout, metadata
        )

    async def list_coupons(
        self,
        *,
        room_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.ListCouponsResponse:
        """Return one page of the calling viewer's coupons, newest first."""
        request = _requests.list_coupons(room_id, page_size, page_token)
        return await self._unary(
            self.stub.ListCoupons, request, svc_pb2.ListCouponsResponse, timeout, metadata
        )

    async def iter_coupons(
        self,
        *,
        room_id: str = "",
        page_size: int = 0,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> AsyncIterator[resources_pb2.Coupon]:
        """Yield every coupon of the calling viewer, fetching page after page."""
        page_token = ""
        while True:
            page = await self.list_coupons(
                room_id=room_id,
                page_size=page_size,
                page_token=page_token,
                timeout=timeout,
                metadata=metadata,
            )
            for coupon in page.coupons:
                yield coupon
            page_token = page.next_page_token
            if not page_token:
                return

    async def redeem_coupon(
        self,
        order_id: str,
        coupon_code: str,
        viewer_id: str,
        currency_code: str,
        lines: Iterable[resources_pb2.OrderLine],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.RedeemCouponResponse:
        """Redeem a coupon on an order (order service only); idempotent per order_id."""
        request = _requests.redeem_coupon(order_id, coupon_code, viewer_id, currency_code, lines)
        return await self._unary(
            self.stub.RedeemCoupon, request, svc_pb2.RedeemCouponResponse, timeout, metadata
        )

    async def release_coupon(
        self,
        order_id: str,
        *,
        payment_failed: bool = False,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.ReleaseCouponResponse:
        """Give back the coupons of an order that was cancelled (or whose payment failed,
        `payment_failed=True`); order service only, idempotent per order_id."""
        reason = (
            resources_pb2.RELEASE_REASON_PAYMENT_FAILED
            if payment_failed
            else resources_pb2.RELEASE_REASON_ORDER_CANCELLED
        )
        request = _requests.release_coupon(order_id, reason)
        return await self._unary(
            self.stub.ReleaseCoupon, request, svc_pb2.ReleaseCouponResponse, timeout, metadata
        )

    async def lock_coupon(
        self,
        order_id: str,
        coupon_code: str,
        viewer_id: str,
        currency_code: str,
        lines: Iterable[resources_pb2.OrderLine],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.LockCouponResponse:
        """Lock a coupon for an order at checkout (order service only); idempotent per
        (order_id, coupon_code). Confirm it with confirm_coupons once the payment succeeds."""
        request = _requests.lock_coupon(order_id, coupon_code, viewer_id, currency_code, lines)
        return await self._unary(
            self.stub.LockCoupon, request, svc_pb2.LockCouponResponse, timeout, metadata
        )

    async def confirm_coupons(
        self,
        order_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.ConfirmCouponsResponse:
        """Confirm the coupons locked for an order whose payment succeeded (order service
        only); idempotent per order_id."""
        request = _requests.confirm_coupons(order_id)
        return await self._unary(
            self.stub.ConfirmCoupons, request, svc_pb2.ConfirmCouponsResponse, timeout, metadata
        )

    async def refund_coupons(
        self,
        order_id: str,
        *,
        full: bool,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.RefundCouponsResponse:
        """Record a refund of a confirmed order: `full` gives its coupons back, a partial
        refund keeps them used (order service only); idempotent per order_id."""
        request = _requests.refund_coupons(order_id, full)
        return await self._unary(
            self.stub.RefundCoupons, request, svc_pb2.RefundCouponsResponse, timeout, metadata
        )

    async def list_pool_grants(
        self,
        room_id: str,
        pool_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> svc_pb2.ListPoolGrantsResponse:
        """One page of a pool's winner list, in the order grants were decided (streamer)."""
        request = _requests.list_pool_grants(room_id, pool_id, page_size, page_token)
        return await self._unary(
            self.stub.ListPoolGrants, request, svc_pb2.ListPoolGrantsResponse, timeout, metadata
        )

    async def get_pool_stats(
        self,
        room_id: str,
        pool_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> resources_pb2.PoolStats:
        """A pool's live counts, which add up to its total (streamer owning the room)."""
        request = _requests.get_pool_stats(room_id, pool_id)
        response = await self._unary(
            self.stub.GetPoolStats, request, svc_pb2.GetPoolStatsResponse, timeout, metadata
        )
        return response.stats

    def subscribe(
        self,
        room_id: str,
        *,
        resume_after_sequence: int = 0,
        include_heartbeats: bool = False,
        metadata: Metadata | None = None,
    ) -> RoomSubscription:
        """Return a RoomSubscription to the room (StreamAllocationInfo), connecting lazily."""
        state = ResumeState(
            room_id,
            resume_after_sequence=resume_after_sequence,
            include_heartbeats=include_heartbeats,
            policy=self.config.stream_retry,
        )
        subscription = RoomSubscription(
            self.stub, state, lambda: call_metadata(self.config, metadata)
        )
        self._subscriptions.add(subscription)
        return subscription

    stream_allocation_info = subscribe
    """The RPC's own name for subscribe()."""

    async def _unary(
        self,
        method: Any,
        request: Message,
        response_type: type[_Response],
        timeout: float | None,
        metadata: Metadata | None,
    ) -> _Response:
        # The request, and so its request_id, is built once by the caller: every attempt resends
        # the very same message, which is what makes the retry of a write safe.
        retrier = Retrier(
            self.config.retry,
            RETRYABLE_CODES,
            timeout=self.config.timeout if timeout is None else timeout,
        )
        while True:
            try:
                response = await method(
                    request,
                    timeout=retrier.attempt_timeout(),
                    metadata=call_metadata(self.config, metadata),
                )
                return cast(_Response, response)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                delay = retrier.next_delay(error)
                if delay is None:
                    raise error from exc
            await asyncio.sleep(delay)
