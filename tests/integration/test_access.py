"""Access control over real gRPC: who may call what (PERMISSION_DENIED), who is no one
(UNAUTHENTICATED), and that a refused caller learns nothing and changes nothing (AIP-211)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf.message import Message

from client_sdk import PermissionDeniedError, from_rpc_error, mint_token
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as svc_grpc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomMaker, ServerHandle
from tests.support import (
    CURRENCY,
    TOKEN_KEY,
    fixed_pool,
    new_request_id,
    room_message,
    unique,
)

Code = grpc.StatusCode
Metadata = tuple[tuple[str, str], ...]

SERVICE_PATH = "/liveresource.v1.ResourceAllocationService/"
STREAM = "StreamAllocationInfo"
UNARY_RPCS = (
    "RegisterRoom",
    "GetConfigurationOptions",
    "ConfigureResources",
    "Allocate",
    "ListCoupons",
    "RedeemCoupon",
    "ReleaseCoupon",
    "LockCoupon",
    "ConfirmCoupons",
    "RefundCoupons",
    "ListPoolGrants",
    "GetPoolStats",
)
ALL_RPCS = (*UNARY_RPCS, STREAM)
ROLES = ("platform", "streamer", "viewer", "order_service")
ALLOWED = {
    "RegisterRoom": "platform",
    "GetConfigurationOptions": "streamer",
    "ConfigureResources": "streamer",
    "Allocate": "viewer",
    "ListCoupons": "viewer",
    "RedeemCoupon": "order_service",
    "ReleaseCoupon": "order_service",
    "LockCoupon": "order_service",
    "ConfirmCoupons": "order_service",
    "RefundCoupons": "order_service",
    "ListPoolGrants": "streamer",
    "GetPoolStats": "streamer",
}
DENIED = [(rpc, role) for rpc in UNARY_RPCS for role in ROLES if role != ALLOWED[rpc]]
GARBAGE = (b"\xff\xff\xff\xff", b"\x0a\x05ab")
CALL_TIMEOUT = 5.0


# --- tokens and calls -------------------------------------------------------------------


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def auth(role: str, subject: str) -> Metadata:
    return bearer(mint_token(subject, role, key=TOKEN_KEY))


def signed(claims: dict[str, Any], key: str = TOKEN_KEY) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "someone",
        "role": "viewer",
        "aud": "liveresource",
        "iat": now,
        "exp": now + 3600,
    }
    for name, value in overrides.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def _bad_credentials() -> dict[str, Callable[[], Metadata]]:
    return {
        "no-token": lambda: (),
        "other-key": lambda: bearer(signed(claims(), key="another-key-" + "x" * 32)),
        "expired": lambda: bearer(
            signed(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
        ),
        "unknown-role": lambda: bearer(signed(claims(role="admin"))),
        "no-role": lambda: bearer(signed(claims(role=None))),
        "wrong-audience": lambda: bearer(signed(claims(aud="another-service"))),
        "no-audience": lambda: bearer(signed(claims(aud=None))),
        "no-expiry": lambda: bearer(signed(claims(exp=None))),
        "no-subject": lambda: bearer(signed(claims(sub=None))),
        "alg-none": lambda: bearer(jwt.encode(claims(), None, algorithm="none")),
        "basic-scheme": lambda: (("authorization", "Basic xyz"),),
        "bearer-without-token": lambda: (("authorization", "Bearer "),),
        "not-a-jwt": lambda: bearer("not.a.jwt"),
        "token-without-scheme": lambda: (
            ("authorization", mint_token("someone", "viewer", key=TOKEN_KEY)),
        ),
    }


BAD_CREDENTIALS = _bad_credentials()


def _identity(data: bytes) -> bytes:
    return data


async def invoke(stub: Any, rpc: str, request: Message, metadata: Metadata) -> Any:
    """One call through the generated stub; for the stream, its first message."""
    if rpc == STREAM:
        call = stub.StreamAllocationInfo(request, metadata=metadata, timeout=CALL_TIMEOUT)
        try:
            return await call.read()
        finally:
            call.cancel()
    return await getattr(stub, rpc)(request, metadata=metadata, timeout=CALL_TIMEOUT)


async def invoke_raw(
    channel: grpc.aio.Channel, rpc: str, payload: bytes, metadata: Metadata
) -> Any:
    """One call whose request bytes are sent as given."""
    path = SERVICE_PATH + rpc
    if rpc == STREAM:
        streaming = channel.unary_stream(
            path, request_serializer=_identity, response_deserializer=_identity
        )
        call = streaming(payload, metadata=metadata, timeout=CALL_TIMEOUT)
        try:
            return await call.read()
        finally:
            call.cancel()
    unary = channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)
    return await unary(payload, metadata=metadata, timeout=CALL_TIMEOUT)


async def refused(call: Any, code: Code) -> grpc.aio.AioRpcError:
    """Await `call`, which must fail with `code`; return the error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, (error.code(), error.details())
    assert "Traceback" not in (error.details() or "")
    return error


def reason(error: grpc.aio.AioRpcError) -> str:
    return from_rpc_error(error).reason


# --- a room with a pool, coupons and a redeemed order -----------------------------------


@dataclass
class World:
    channel: grpc.aio.Channel
    stub: Any
    room_id: str
    streamer_id: str
    platform_id: str
    viewer_id: str
    orders_id: str
    pool: res.Pool
    free_code: str
    redeemed_order: str

    def subject_for(self, rpc: str) -> str:
        """The subject that would be allowed to make the call with the right role."""
        return {
            "RegisterRoom": self.platform_id,
            "GetConfigurationOptions": self.streamer_id,
            "ConfigureResources": self.streamer_id,
            "Allocate": self.viewer_id,
            "ListCoupons": self.viewer_id,
            "RedeemCoupon": self.orders_id,
            "ReleaseCoupon": self.orders_id,
            "LockCoupon": self.orders_id,
            "ConfirmCoupons": self.orders_id,
            "RefundCoupons": self.orders_id,
            "ListPoolGrants": self.streamer_id,
            "GetPoolStats": self.streamer_id,
        }.get(rpc, self.viewer_id)

    def order_lines(self) -> list[res.OrderLine]:
        return [
            res.OrderLine(
                goods_id=f"{self.room_id}-tea", shop_id="shop-a", unit_price_minor=9000, quantity=1
            )
        ]

    def valid_request(self, rpc: str) -> Message:
        """A request the allowed caller would get answered (changing state for writes)."""
        if rpc == "RegisterRoom":
            return svc.RegisterRoomRequest(
                request_id=new_request_id(),
                room=room_message(unique("room"), unique("streamer")),
            )
        if rpc == "GetConfigurationOptions":
            return svc.GetConfigurationOptionsRequest(room_id=self.room_id)
        if rpc == "ConfigureResources":
            return svc.ConfigureResourcesRequest(
                request_id=new_request_id(),
                room_id=self.room_id,
                create_pool=fixed_pool(self.room_id),
            )
        if rpc == "Allocate":
            return svc.AllocateRequest(request_id=new_request_id(), pool_id=self.pool.pool_id)
        if rpc == "ListCoupons":
            return svc.ListCouponsRequest()
        if rpc == "RedeemCoupon":
            return svc.RedeemCouponRequest(
                order_id=unique("order"),
                coupon_code=self.free_code,
                viewer_id=self.viewer_id,
                currency_code=CURRENCY,
                lines=self.order_lines(),
            )
        if rpc == "ReleaseCoupon":
            return svc.ReleaseCouponRequest(order_id=self.redeemed_order)
        if rpc == "LockCoupon":
            return svc.LockCouponRequest(
                order_id=unique("order"),
                coupon_code=self.free_code,
                viewer_id=self.viewer_id,
                currency_code=CURRENCY,
                lines=self.order_lines(),
            )
        if rpc == "ConfirmCoupons":
            return svc.ConfirmCouponsRequest(order_id=self.redeemed_order)
        if rpc == "RefundCoupons":
            return svc.RefundCouponsRequest(order_id=self.redeemed_order, kind=svc.REFUND_KIND_FULL)
        if rpc == "ListPoolGrants":
            return svc.ListPoolGrantsRequest(room_id=self.room_id, pool_id=self.pool.pool_id)
        if rpc == "GetPoolStats":
            return svc.GetPoolStatsRequest(room_id=self.room_id, pool_id=self.pool.pool_id)
        return svc.StreamAllocationInfoRequest(room_id=self.room_id)

    def invalid_request(self, rpc: str) -> Message:
        """A request that is not valid, whoever sends it."""
        if rpc == "RegisterRoom":
            room = room_message(unique("room"), unique("streamer"))
            room.currency_code = "cny"
            return svc.RegisterRoomRequest(request_id="not-a-uuid", room=room)
        if rpc == "GetConfigurationOptions":
            return svc.GetConfigurationOptionsRequest(room_id="")
        if rpc == "ConfigureResources":
            pool = fixed_pool(self.room_id, total=0, limit=0)
            return svc.ConfigureResourcesRequest(
                request_id="not-a-uuid", room_id=self.room_id, create_pool=pool
            )
        if rpc == "Allocate":
            return svc.AllocateRequest(request_id="not-a-uuid", pool_id="")
        if rpc == "ListCoupons":
            return svc.ListCouponsRequest(page_size=-1, page_token="???")
        if rpc == "RedeemCoupon":
            return svc.RedeemCouponRequest(order_id="bad order!", currency_code="cny")
        if rpc == "ReleaseCoupon":
            return svc.ReleaseCouponRequest(order_id="")
        if rpc == "LockCoupon":
            return svc.LockCouponRequest(order_id="bad order!", currency_code="cny")
        if rpc == "ConfirmCoupons":
            return svc.ConfirmCouponsRequest(order_id="")
        if rpc == "RefundCoupons":
            return svc.RefundCouponsRequest(order_id=self.redeemed_order)  # no kind
        if rpc == "ListPoolGrants":
            return svc.ListPoolGrantsRequest(room_id=self.room_id, pool_id="", page_size=-1)
        if rpc == "GetPoolStats":
            return svc.GetPoolStatsRequest(room_id=self.room_id, pool_id="bad pool!")
        return svc.StreamAllocationInfoRequest(room_id="", resume_after_sequence=-1)

    async def state(self) -> tuple[int, list[res.Pool], list[tuple[str, int, str]]]:
        """The room's snapshot (sequence and pools) and the viewer's coupons."""
        snapshot = await invoke(
            self.stub,
            STREAM,
            svc.StreamAllocationInfoRequest(room_id=self.room_id),
            auth("viewer", "access-observer"),
        )
        assert snapshot.WhichOneof("payload") == "snapshot"
        listed = await self.stub.ListCoupons(
            svc.ListCouponsRequest(page_size=200),
            metadata=auth("viewer", self.viewer_id),
            timeout=CALL_TIMEOUT,
        )
        coupons = [(c.code, c.state, c.order_id) for c in listed.coupons]
        return snapshot.snapshot.sequence, list(snapshot.snapshot.pools), coupons

    async def room_exists(self, room_id: str) -> bool:
        try:
            await invoke(
                self.stub,
                STREAM,
                svc.StreamAllocationInfoRequest(room_id=room_id),
                auth("viewer", "access-observer"),
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == Code.NOT_FOUND, exc
            return False
        return True


@pytest.fixture(scope="module")
async def world(server: ServerHandle) -> AsyncIterator[World]:
    channel = grpc.aio.insecure_channel(server.target)
    stub = svc_grpc.ResourceAllocationServiceStub(channel)
    room_id, streamer_id = unique("room"), unique("streamer")
    platform_id, viewer_id, orders_id = unique("platform"), unique("viewer"), unique("orders")
    await stub.RegisterRoom(
        svc.RegisterRoomRequest(
            request_id=new_request_id(), room=room_message(room_id, streamer_id)
        ),
        metadata=auth("platform", platform_id),
    )
    created = await stub.ConfigureResources(
        svc.ConfigureResourcesRequest(
            request_id=new_request_id(),
            room_id=room_id,
            create_pool=fixed_pool(room_id, total=50, limit=2),
        ),
        metadata=auth("streamer", streamer_id),
    )
    codes = []
    for _ in range(2):
        grant = await stub.Allocate(
            svc.AllocateRequest(request_id=new_request_id(), pool_id=created.pool.pool_id),
            metadata=auth("viewer", viewer_id),
        )
        assert grant.outcome == svc.ALLOCATION_OUTCOME_GRANTED
        codes.append(grant.coupon.code)
    built = World(
        channel=channel,
        stub=stub,
        room_id=room_id,
        streamer_id=streamer_id,
        platform_id=platform_id,
        viewer_id=viewer_id,
        orders_id=orders_id,
        pool=created.pool,
        free_code=codes[1],
        redeemed_order=unique("order"),
    )
    await stub.RedeemCoupon(
        svc.RedeemCouponRequest(
            order_id=built.redeemed_order,
            coupon_code=codes[0],
            viewer_id=viewer_id,
            currency_code=CURRENCY,
            lines=built.order_lines(),
        ),
        metadata=auth("order_service", orders_id),
    )
    yield built
    await channel.close()


# --- wrong role: PERMISSION_DENIED ------------------------------------------------------


@pytest.mark.parametrize(("rpc", "role"), DENIED, ids=[f"{r}-by-{o}" for r, o in DENIED])
async def test_a_role_that_may_not_call_is_denied_and_nothing_changes(
    world: World, rpc: str, role: str
) -> None:
    before = await world.state()
    request = world.valid_request(rpc)
    # The subject is the one that would be allowed: only the role is wrong.
    error = await refused(
        invoke(world.stub, rpc, request, auth(role, world.subject_for(rpc))),
        Code.PERMISSION_DENIED,
    )
    assert reason(error) == "ROLE_NOT_ALLOWED"
    assert await world.state() == before
    if isinstance(request, svc.RegisterRoomRequest):
        assert not await world.room_exists(request.room.room_id)


@pytest.mark.parametrize(("rpc", "role"), DENIED, ids=[f"{r}-by-{o}" for r, o in DENIED])
async def test_a_role_that_may_not_call_is_denied_even_for_an_invalid_request(
    world: World, rpc: str, role: str
) -> None:
    before = await world.state()
    error = await refused(
        invoke(world.stub, rpc, world.invalid_request(rpc), auth(role, world.subject_for(rpc))),
        Code.PERMISSION_DENIED,
    )
    assert reason(error) == "ROLE_NOT_ALLOWED"
    assert await world.state() == before


# The same invalid requests from the allowed role: proof that they really are invalid (only
# GetConfigurationOptions answers PERMISSION_DENIED, since an empty room id names no room the
# caller owns).
_ALLOWED_INVALID = {
    "RegisterRoom": (Code.INVALID_ARGUMENT, "request_id"),
    "GetConfigurationOptions": (Code.PERMISSION_DENIED, None),
    "ConfigureResources": (Code.INVALID_ARGUMENT, "request_id"),
    "Allocate": (Code.INVALID_ARGUMENT, "request_id"),
    "ListCoupons": (Code.INVALID_ARGUMENT, "page_size"),
    "RedeemCoupon": (Code.INVALID_ARGUMENT, "order_id"),
    "ReleaseCoupon": (Code.INVALID_ARGUMENT, "order_id"),
    "LockCoupon": (Code.INVALID_ARGUMENT, "order_id"),
    "ConfirmCoupons": (Code.INVALID_ARGUMENT, "order_id"),
    "RefundCoupons": (Code.INVALID_ARGUMENT, "kind"),
    "ListPoolGrants": (Code.INVALID_ARGUMENT, "pool_id"),
    "GetPoolStats": (Code.INVALID_ARGUMENT, "pool_id"),
    STREAM: (Code.INVALID_ARGUMENT, "room_id"),
}


@pytest.mark.parametrize("rpc", ALL_RPCS)
async def test_the_allowed_role_gets_the_invalid_request_rejected(world: World, rpc: str) -> None:
    code, field = _ALLOWED_INVALID[rpc]
    role = ALLOWED.get(rpc, "viewer")
    error = await refused(
        invoke(world.stub, rpc, world.invalid_request(rpc), auth(role, world.subject_for(rpc))),
        code,
    )
    if field is not None:
        fields = [v.field for v in from_rpc_error(error).field_violations]
        assert field in fields, fields
    else:
        assert reason(error) == "NOT_ROOM_OWNER"


async def test_a_role_that_may_not_call_is_denied_even_for_undecodable_bytes(
    world: World,
) -> None:
    answers = {}
    for rpc, role in DENIED:
        for payload in GARBAGE:
            try:
                await invoke_raw(world.channel, rpc, payload, auth(role, world.subject_for(rpc)))
            except grpc.aio.AioRpcError as exc:
                assert "Traceback" not in (exc.details() or "")
                answers[(rpc, role, payload)] = exc.code()
            else:
                answers[(rpc, role, payload)] = Code.OK
    wrong = {key: code for key, code in answers.items() if code != Code.PERMISSION_DENIED}
    assert wrong == {}


async def test_every_role_may_subscribe(world: World) -> None:
    for role in ROLES:
        item = await invoke(
            world.stub,
            STREAM,
            svc.StreamAllocationInfoRequest(room_id=world.room_id),
            auth(role, unique(role)),
        )
        assert item.WhichOneof("payload") == "snapshot"
        assert [p.pool_id for p in item.snapshot.pools] == [world.pool.pool_id]


# --- no valid token: UNAUTHENTICATED ----------------------------------------------------


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("rpc", ALL_RPCS)
async def test_a_call_without_a_valid_token_is_unauthenticated(
    world: World, rpc: str, credential: str
) -> None:
    before = await world.state()
    metadata = BAD_CREDENTIALS[credential]()
    await refused(invoke(world.stub, rpc, world.valid_request(rpc), metadata), Code.UNAUTHENTICATED)
    await refused(
        invoke(world.stub, rpc, world.invalid_request(rpc), metadata), Code.UNAUTHENTICATED
    )
    assert await world.state() == before


@pytest.mark.parametrize("credential", ["no-token", "other-key", "expired", "basic-scheme"])
@pytest.mark.parametrize("rpc", ALL_RPCS)
async def test_undecodable_bytes_without_a_valid_token_are_unauthenticated(
    world: World, rpc: str, credential: str
) -> None:
    for payload in GARBAGE:
        await refused(
            invoke_raw(world.channel, rpc, payload, BAD_CREDENTIALS[credential]()),
            Code.UNAUTHENTICATED,
        )


async def test_the_unauthenticated_answers_name_the_problem(world: World) -> None:
    request = world.valid_request("ListCoupons")
    expected = {
        "no-token": "MISSING_TOKEN",
        "basic-scheme": "MALFORMED_TOKEN",
        "expired": "TOKEN_EXPIRED",
        "other-key": "INVALID_TOKEN",
        "unknown-role": "INVALID_TOKEN",
        "wrong-audience": "INVALID_TOKEN",
    }
    for credential, want in expected.items():
        error = await refused(
            invoke(world.stub, "ListCoupons", request, BAD_CREDENTIALS[credential]()),
            Code.UNAUTHENTICATED,
        )
        assert reason(error) == want, credential


# --- room ownership ---------------------------------------------------------------------


async def test_a_streamer_cannot_read_the_options_of_another_or_a_missing_room(
    world: World, make_room: RoomMaker
) -> None:
    intruder = await make_room()
    own = await intruder.streamer.get_configuration_options(intruder.room_id)
    assert own.options.room_id == intruder.room_id
    answers = []
    for room_id in (world.room_id, unique("room"), "no such room!"):
        with pytest.raises(PermissionDeniedError) as info:
            await intruder.streamer.get_configuration_options(room_id)
        answers.append((info.value.message, info.value.reason))
    # Another streamer's room and a room that does not exist get the very same answer.
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][1] == "NOT_ROOM_OWNER"


async def test_a_streamer_cannot_configure_another_or_a_missing_room(
    world: World, make_room: RoomMaker
) -> None:
    intruder = await make_room()
    pool = world.pool
    operations: list[dict[str, Message]] = [
        {"create_pool": fixed_pool(world.room_id)},
        {"create_pool": fixed_pool(world.room_id, total=0, limit=0, valid_for=0)},
        {
            "add_stock": svc.AddStock(
                pool_id=pool.pool_id, expected_version=pool.version, quantity=5
            )
        },
        {"stop_pool": svc.StopPool(pool_id=pool.pool_id, expected_version=pool.version)},
        {
            "update_claim_window": svc.UpdateClaimWindow(
                pool_id=pool.pool_id,
                expected_version=pool.version,
                claim_start_time=pool.claim_start_time,
            )
        },
    ]
    before = await world.state()
    answers = set()
    for operation in operations:
        for room_id in (world.room_id, unique("room"), "no such room!"):
            for request_id in (new_request_id(), "not-a-uuid"):
                request = svc.ConfigureResourcesRequest(
                    request_id=request_id, room_id=room_id, **operation
                )
                error = await refused(
                    world.stub.ConfigureResources(
                        request, metadata=auth("streamer", intruder.streamer_id)
                    ),
                    Code.PERMISSION_DENIED,
                )
                answers.add((error.details(), reason(error)))
        assert await world.state() == before
    assert len(answers) == 1, answers
    assert next(iter(answers))[1] == "NOT_ROOM_OWNER"


# --- a viewer sees only their own coupons -----------------------------------------------


async def test_a_viewer_lists_only_their_own_coupons(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    pool = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=fixed_pool(room.room_id, total=10, limit=2)
        )
    ).pool
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = clients("viewer", alice_id), clients("viewer", bob_id)
    granted: dict[str, set[str]] = {alice_id: set(), bob_id: set()}
    for viewer_id, viewer, grabs in ((alice_id, alice, 2), (bob_id, bob, 1)):
        for _ in range(grabs):
            answer = await viewer.allocate(pool.pool_id)
            assert answer.outcome == svc.ALLOCATION_OUTCOME_GRANTED
            granted[viewer_id].add(answer.coupon.code)
    for viewer_id, viewer in ((alice_id, alice), (bob_id, bob)):
        for room_filter in ("", room.room_id):
            listed = (await viewer.list_coupons(room_id=room_filter, page_size=200)).coupons
            assert {c.code for c in listed} == granted[viewer_id]
            assert {c.viewer_id for c in listed} == {viewer_id}
    stranger = clients("viewer", unique("stranger"))
    assert list((await stranger.list_coupons(room_id=room.room_id)).coupons) == []
