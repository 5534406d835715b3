"""ResourceAllocationService: each method decodes, calls one use case, encodes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from server.api import convert
from server.api.calls import (
    CallRunner,
    Note,
    Send,
    UnaryBehavior,
    encoded,
)
from server.domain.errors import Overloaded
from server.domain.models import (
    Principal,
    Role,
    RoomEvent,
    SnapshotMessage,
    SubscriptionItem,
)
from server.domain.validation import id_match, request_id_match
from server.metrics import Metrics
from server.service import allocate, checkout, configure, coupons, reports, rooms, subscribe
from server.service.admission import AdmissionGate
from server.service.context import ServiceContext
from server.service.eligibility import EligibilityDesk
from server.service.grants import GrantDesk
from server.service.lifecycle import LifecycleTicker
from server.store.interface import IdempotencyKey
from server.streaming.feed import FeedRegistry

_ENCODED_EVENTS = 4096  # recent events kept encoded, across rooms

SERVICE_NAME = svc.DESCRIPTOR.services_by_name["ResourceAllocationService"].full_name


@dataclass
class Servicer:
    """The service's RPCs over the use cases."""

    ctx: ServiceContext
    feeds: FeedRegistry
    ticker: LifecycleTicker
    heartbeat_seconds: float
    max_lag_events: int
    gate: AdmissionGate
    eligibility: EligibilityDesk
    desk: GrantDesk | None = None
    """The batched grab path; None means one transaction per grab."""
    metrics: Metrics | None = None
    _snapshots: convert.SnapshotEncoder = field(default_factory=convert.SnapshotEncoder)
    _answers: convert.AllocationEncoder = field(default_factory=convert.AllocationEncoder)
    _encoded: OrderedDict[tuple[str, int], bytes] = field(default_factory=OrderedDict)

    def pool_changed(self, pool_id: str) -> None:
        """A pool's configuration or announced state changed in the store."""
        self.ticker.poke()
        if self.desk is not None:
            self.desk.invalidate(pool_id)

    def _key(
        self,
        principal: Principal,
        method: str,
        request_id: str,
        request: svc.RegisterRoomRequest | svc.ConfigureResourcesRequest,
    ) -> IdempotencyKey:
        return IdempotencyKey(
            principal.subject,
            request_id,
            method,
            convert.fingerprint(request),
        )

    async def register_room(
        self, principal: Principal, request: svc.RegisterRoomRequest
    ) -> tuple[svc.RegisterRoomResponse, str]:
        key = self._key(principal, "RegisterRoom", request.request_id, request)
        room = await rooms.register_room(self.ctx, principal, key, convert.room_in(request.room))
        return svc.RegisterRoomResponse(room=convert.room_out(room)), f"room={room.room_id}"

    async def get_configuration_options(
        self,
        principal: Principal,
        request: svc.GetConfigurationOptionsRequest,
    ) -> tuple[svc.GetConfigurationOptionsResponse, str]:
        options = await rooms.configuration_options(self.ctx, principal, request.room_id)
        return (
            svc.GetConfigurationOptionsResponse(options=convert.options_out(options)),
            f"room={request.room_id}",
        )

    async def configure_resources(
        self,
        principal: Principal,
        request: svc.ConfigureResourcesRequest,
    ) -> tuple[svc.ConfigureResourcesResponse, str]:
        key = self._key(principal, "ConfigureResources", request.request_id, request)
        pool = await configure.configure(
            self.ctx,
            principal,
            request.room_id,
            key,
            lambda: convert.configure_op_in(request),
            on_change=self.pool_changed,
        )
        note = f"op={request.WhichOneof('operation')} pool={pool.pool_id} v={pool.version}"
        return (svc.ConfigureResourcesResponse(pool=convert.pool_out(pool, self.ctx.clock())), note)

    def allocate_now(
        self, principal: Principal, request: svc.AllocateRequest
    ) -> tuple[bytes, Note] | None:
        """A grab answered at once, with no coroutine and no wait: a retry's recorded answer,
        or a refusal the pool's committed view proves (most calls of a stampede). None: the
        grab goes to `allocate`. A grab answered here holds no admission place (it never
        waits); one with a field to report, or a pool that may restrict who grabs, goes on."""
        desk = self.desk
        if desk is None:
            return None
        pool_id = request.pool_id
        request_id = request.request_id
        if (
            request_id_match(request_id) is None
            or id_match(pool_id) is None
            or self.eligibility.may_restrict(pool_id)
        ):
            return None
        result = desk.answer_now(principal.subject, request_id, pool_id)
        if result is None:
            return None
        outcome = result.outcome
        if self.metrics is not None:  # `observe_outcome`, inline (a StrEnum is its value)
            counts = self.metrics.outcome_counts
            counts[outcome] = counts.get(outcome, 0) + 1
        return self._answers.encode(result), Note(("pool=%s outcome=%s", pool_id, outcome))

    async def allocate(
        self, principal: Principal, request: svc.AllocateRequest
    ) -> tuple[bytes, Note]:
        # The pool is Allocate's only parameter besides request_id: it is the fingerprint.
        key = IdempotencyKey(principal.subject, request.request_id, "Allocate", request.pool_id)
        try:
            admitted = self.gate.admit()
        except Overloaded:
            if self.metrics is not None:
                self.metrics.admission_refused.inc()
            raise
        with admitted:
            allocate.check_grab(principal, key, request.pool_id)
            refused = None
            restricted = self.eligibility.may_restrict(request.pool_id)
            if restricted:
                refused = await self.eligibility.refusal(principal, key, request.pool_id)
            if refused is not None:
                result = refused
            elif self.desk is not None:
                # Unless the pool may restrict who grabs, `allocate_now` has just asked the
                # desk, with nothing run since.
                answer = None
                if restricted:
                    answer = self.desk.answer_now(key.subject, key.request_id, request.pool_id)
                if answer is None:
                    answer = await self.desk.decide(key, request.pool_id)
                result = answer
            else:
                result = await allocate.allocate(self.ctx, principal, key, request.pool_id)
        if self.metrics is not None:
            self.metrics.observe_outcome(result.outcome.value)
        # Wire bytes: a refusal is encoded once per pool state (only server_time differs).
        note = Note(("pool=%s outcome=%s", request.pool_id, result.outcome))
        return self._answers.encode(result), note

    async def list_coupons(
        self, principal: Principal, request: svc.ListCouponsRequest
    ) -> tuple[svc.ListCouponsResponse, str]:
        page, token = await coupons.list_coupons(
            self.ctx, principal, request.room_id, request.page_size, request.page_token
        )
        now = self.ctx.clock()
        return (
            svc.ListCouponsResponse(
                coupons=[convert.coupon_out(c, now) for c in page], next_page_token=token
            ),
            f"count={len(page)}",
        )

    async def redeem_coupon(
        self, principal: Principal, request: svc.RedeemCouponRequest
    ) -> tuple[svc.RedeemCouponResponse, str]:
        redemption, note = await self._lock(principal, request, one_step=True)
        return svc.RedeemCouponResponse(redemption=redemption), note

    async def lock_coupon(
        self, principal: Principal, request: svc.LockCouponRequest
    ) -> tuple[svc.LockCouponResponse, str]:
        redemption, note = await self._lock(principal, request, one_step=False)
        return svc.LockCouponResponse(redemption=redemption), note

    async def _lock(
        self,
        principal: Principal,
        request: svc.RedeemCouponRequest | svc.LockCouponRequest,
        *,
        one_step: bool,
    ) -> tuple[res.Redemption, str]:
        """RedeemCoupon and LockCoupon: the same request fields, one step or two."""
        redemption = await checkout.lock(
            self.ctx,
            principal,
            request.order_id,
            request.coupon_code,
            request.viewer_id,
            request.currency_code,
            convert.order_lines_in(list(request.lines)),
            convert.fingerprint(request),
            one_step=one_step,
        )
        note = f"order={request.order_id} discount={redemption.discount_minor}"
        return convert.redemption_out(redemption, self.ctx.clock()), note

    async def confirm_coupons(
        self, principal: Principal, request: svc.ConfirmCouponsRequest
    ) -> tuple[svc.ConfirmCouponsResponse, str]:
        order = await checkout.confirm(self.ctx, principal, request.order_id)
        now = self.ctx.clock()
        return (
            svc.ConfirmCouponsResponse(redemptions=[convert.redemption_out(r, now) for r in order]),
            f"order={request.order_id} coupons={len(order)}",
        )

    async def release_coupon(
        self,
        principal: Principal,
        request: svc.ReleaseCouponRequest,
    ) -> tuple[svc.ReleaseCouponResponse, str]:
        order = await checkout.release(
            self.ctx, principal, request.order_id, convert.release_reason_in(request.reason)
        )
        now = self.ctx.clock()
        out = [convert.redemption_out(r, now) for r in order]
        return (
            svc.ReleaseCouponResponse(redemption=out[0], coupon=out[0].coupon, redemptions=out),
            f"order={request.order_id} coupons={len(order)}",
        )

    async def refund_coupons(
        self, principal: Principal, request: svc.RefundCouponsRequest
    ) -> tuple[svc.RefundCouponsResponse, str]:
        order = await checkout.refund(
            self.ctx, principal, request.order_id, convert.refund_kind_in(request.kind)
        )
        now = self.ctx.clock()
        return (
            svc.RefundCouponsResponse(redemptions=[convert.redemption_out(r, now) for r in order]),
            f"order={request.order_id} coupons={len(order)}",
        )

    async def list_pool_grants(
        self, principal: Principal, request: svc.ListPoolGrantsRequest
    ) -> tuple[svc.ListPoolGrantsResponse, str]:
        page, token = await reports.list_grants(
            self.ctx,
            principal,
            request.room_id,
            request.pool_id,
            request.page_size,
            request.page_token,
        )
        now = self.ctx.clock()
        return (
            svc.ListPoolGrantsResponse(
                grants=[convert.grant_out(c, now) for c in page], next_page_token=token
            ),
            f"pool={request.pool_id} count={len(page)}",
        )

    async def get_pool_stats(
        self, principal: Principal, request: svc.GetPoolStatsRequest
    ) -> tuple[svc.GetPoolStatsResponse, str]:
        stats = await reports.pool_stats(self.ctx, principal, request.room_id, request.pool_id)
        return (
            svc.GetPoolStatsResponse(stats=convert.stats_out(stats)),
            f"pool={request.pool_id} remaining={stats.remaining_quantity}",
        )

    def stream_allocation_info(
        self,
        principal: Principal,
        request: svc.StreamAllocationInfoRequest,
        send: Send,
    ) -> Coroutine[Any, Any, None]:
        return subscribe.subscribe(
            self.ctx,
            self.feeds,
            principal,
            request.room_id,
            request.resume_after_sequence,
            self.heartbeat_seconds,
            self.max_lag_events,
            self.eligibility,
            render=self._render,
            send=send,
        )

    def _render(self, item: SubscriptionItem) -> svc.StreamAllocationInfoResponse | bytes:
        if isinstance(item, RoomEvent):
            return self.encoded_event(item)
        if isinstance(item, SnapshotMessage):
            return self._snapshots.encode(item)
        return convert.subscription_out(item)

    def encoded_event(self, event: RoomEvent) -> bytes:
        """The wire bytes of a room event, encoded once for every stream of the room."""
        key = (event.room_id, event.sequence)
        cached = self._encoded.get(key)
        if cached is None:
            cached = convert.subscription_out(event).SerializeToString()
            if len(self._encoded) >= _ENCODED_EVENTS:
                self._encoded.popitem(last=False)
            self._encoded[key] = cached
        return cached

    def method_handlers(self, runner: CallRunner) -> dict[str, grpc.RpcMethodHandler]:
        """Every RPC's method handler by method name (each decodes its own request bytes)."""
        unary: dict[str, tuple[UnaryBehavior, type[Message], Role]] = {
            "RegisterRoom": (self.register_room, svc.RegisterRoomRequest, Role.PLATFORM),
            "GetConfigurationOptions": (
                self.get_configuration_options,
                svc.GetConfigurationOptionsRequest,
                Role.STREAMER,
            ),
            "ConfigureResources": (
                self.configure_resources,
                svc.ConfigureResourcesRequest,
                Role.STREAMER,
            ),
            "Allocate": (self.allocate, svc.AllocateRequest, Role.VIEWER),
            "ListCoupons": (self.list_coupons, svc.ListCouponsRequest, Role.VIEWER),
            "RedeemCoupon": (self.redeem_coupon, svc.RedeemCouponRequest, Role.ORDER_SERVICE),
            "ReleaseCoupon": (self.release_coupon, svc.ReleaseCouponRequest, Role.ORDER_SERVICE),
            "LockCoupon": (self.lock_coupon, svc.LockCouponRequest, Role.ORDER_SERVICE),
            "ConfirmCoupons": (
                self.confirm_coupons,
                svc.ConfirmCouponsRequest,
                Role.ORDER_SERVICE,
            ),
            "RefundCoupons": (self.refund_coupons, svc.RefundCouponsRequest, Role.ORDER_SERVICE),
            "ListPoolGrants": (self.list_pool_grants, svc.ListPoolGrantsRequest, Role.STREAMER),
            "GetPoolStats": (self.get_pool_stats, svc.GetPoolStatsRequest, Role.STREAMER),
        }
        # The batched grab path shields its own store work; no task per grab for it, and
        # what it knows at once it answers without a coroutine.
        own_shield = {"Allocate"} if self.desk is not None else set()
        quick = {"Allocate": self.allocate_now} if self.desk is not None else {}
        # Allocate answers with wire bytes only: grpcio sends them as they are.
        serializers = {"Allocate": None}
        handlers: dict[str, grpc.RpcMethodHandler] = {
            name: grpc.unary_unary_rpc_method_handler(
                runner.unary(
                    name,
                    behavior,
                    request_type,
                    roles=(role,),
                    shielded=name not in own_shield,
                    quick=quick.get(name),
                ),
                response_serializer=serializers.get(name, encoded),
            )
            for name, (behavior, request_type, role) in unary.items()
        }
        handlers["StreamAllocationInfo"] = grpc.unary_stream_rpc_method_handler(
            runner.stream(
                "StreamAllocationInfo",
                self.stream_allocation_info,
                svc.StreamAllocationInfoRequest,
            ),
            # Events arrive already encoded (shared by all streams of a room).
            response_serializer=encoded,
        )
        return handlers
