"""Bad input over real gRPC: every RPC rejects invalid requests with INVALID_ARGUMENT naming the
exact field and changes nothing; request_id reuse; NOT_FOUND, ABORTED and FAILED_PRECONDITION;
undecodable request bytes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from client_sdk import (
    AlreadyExistsError,
    AsyncLiveResourceClient,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    LiveResourceError,
    NotFoundError,
    from_rpc_error,
    mint_token,
)
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from tests.conftest import ClientFactory, RoomFixture, RoomMaker, ServerHandle
from tests.support import (
    CURRENCY,
    TOKEN_KEY,
    duration,
    fixed_pool,
    later,
    new_request_id,
    room_message,
    ts,
    unique,
)

Code = grpc.StatusCode
SERVICE_PATH = "/liveresource.v1.ResourceAllocationService/"
STREAM = "StreamAllocationInfo"


async def rejected(call: Awaitable[Any], *fields: str) -> InvalidArgumentError:
    """Await `call` (SDK or raw stub): it must fail INVALID_ARGUMENT naming exactly `fields`."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        error: LiveResourceError = from_rpc_error(exc)
    except LiveResourceError as exc:
        error = exc
    else:
        pytest.fail(f"accepted; expected INVALID_ARGUMENT on {fields}")
    assert isinstance(error, InvalidArgumentError), str(error)
    assert [v.field for v in error.field_violations] == list(fields), str(error)
    assert all(v.description for v in error.field_violations)
    assert "Traceback" not in error.message
    return error


async def snapshot_of(client: AsyncLiveResourceClient, room_id: str) -> tuple[int, list[res.Pool]]:
    """The room's sequence and pools, from the first message of a subscription."""
    async with client.subscribe(room_id) as sub:
        first = await asyncio.wait_for(anext(aiter(sub)), 5.0)
    assert first.WhichOneof("payload") == "snapshot"
    return first.snapshot.sequence, list(first.snapshot.pools)


async def first_item(client: AsyncLiveResourceClient, room_id: str, resume_after: int = 0) -> Any:
    async with client.subscribe(room_id, resume_after_sequence=resume_after) as sub:
        return await asyncio.wait_for(anext(aiter(sub)), 5.0)


def lines(room_id: str, *, price: int = 9000, quantity: int = 1) -> list[res.OrderLine]:
    return [
        res.OrderLine(
            goods_id=f"{room_id}-tea", shop_id="shop-a", unit_price_minor=price, quantity=quantity
        )
    ]


# --- RegisterRoom -----------------------------------------------------------------------

RoomEdit = Callable[[svc.RegisterRoomRequest], None]


def _set(path: str, value: Any) -> RoomEdit:
    def edit(request: svc.RegisterRoomRequest) -> None:
        *parents, last = path.split(".")
        target: Any = request
        for name in parents:
            if name.endswith("]"):
                name, index = name[:-1].split("[")
                target = getattr(target, name)[int(index)]
            else:
                target = getattr(target, name)
        setattr(target, last, value)

    return edit


def _duplicate_featured(request: svc.RegisterRoomRequest) -> None:
    request.room.featured_goods[1].goods_id = request.room.featured_goods[0].goods_id


REGISTER_CASES: dict[str, tuple[RoomEdit, str]] = {
    "request_id-not-uuid": (_set("request_id", "not-a-uuid"), "request_id"),
    "request_id-empty": (_set("request_id", ""), "request_id"),
    "room_id-malformed": (_set("room.room_id", "room with spaces"), "room.room_id"),
    "room_id-too-long": (_set("room.room_id", "r" * 65), "room.room_id"),
    "streamer_id-empty": (_set("room.streamer_id", ""), "room.streamer_id"),
    "currency-lower-case": (_set("room.currency_code", "cny"), "room.currency_code"),
    "currency-empty": (_set("room.currency_code", ""), "room.currency_code"),
    "featured-shop-empty": (
        _set("room.featured_goods[0].shop_id", ""),
        "room.featured_goods[0].shop_id",
    ),
    "featured-repeated": (_duplicate_featured, "room.featured_goods[1].goods_id"),
    "featured-title-too-long": (
        _set("room.featured_goods[0].title", "t" * 201),
        "room.featured_goods[0].title",
    ),
    "shop-goods-of-another-shop": (
        _set("room.linked_shops[0].goods[1].shop_id", "shop-z"),
        "room.linked_shops[0].goods[1].shop_id",
    ),
    "shop-name-too-long": (
        _set("room.linked_shops[0].name", "n" * 201),
        "room.linked_shops[0].name",
    ),
}


@pytest.mark.parametrize("case", list(REGISTER_CASES))
async def test_register_room_rejects_a_bad_field_and_registers_nothing(
    clients: ClientFactory, case: str
) -> None:
    platform = clients("platform", unique("platform"))
    edit, field = REGISTER_CASES[case]
    room_id, streamer_id = unique("room"), unique("streamer")
    request = svc.RegisterRoomRequest(
        request_id=new_request_id(), room=room_message(room_id, streamer_id)
    )
    edit(request)
    await rejected(platform.stub.RegisterRoom(request, metadata=token_md(platform)), field)
    # Nothing was registered: the room is unknown, and a valid registration of that id (with
    # the same request_id when it was a valid one) succeeds.
    with pytest.raises(NotFoundError):
        await first_item(platform, room_id)
    request_id = request.request_id if field != "request_id" else new_request_id()
    registered = await platform.register_room(
        room_message(room_id, streamer_id), request_id=request_id
    )
    assert registered.room.room_id == room_id


def token_md(client: AsyncLiveResourceClient) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {client.config.token}"),)


async def test_register_room_request_id_reuse_and_retry(clients: ClientFactory) -> None:
    platform = clients("platform", unique("platform"))
    request_id = new_request_id()
    first_room, other_room = unique("room"), unique("room")
    first = await platform.register_room(
        room_message(first_room, "streamer-x"), request_id=request_id
    )
    error = await rejected(
        platform.register_room(room_message(other_room, "streamer-x"), request_id=request_id),
        "request_id",
    )
    assert error.reason == "REQUEST_ID_REUSED"
    with pytest.raises(NotFoundError):
        await first_item(platform, other_room)
    # The same request again: the very same answer.
    again = await platform.register_room(
        room_message(first_room, "streamer-x"), request_id=request_id
    )
    assert again == first
    # The same room with another request_id: taken.
    with pytest.raises(AlreadyExistsError):
        await platform.register_room(room_message(first_room, "streamer-y"))


async def test_register_room_retry_ignores_create_time(clients: ClientFactory) -> None:
    platform = clients("platform", unique("platform"))
    request_id, room_id = new_request_id(), unique("room")
    first = await platform.register_room(room_message(room_id, "streamer-x"), request_id=request_id)
    retry = room_message(room_id, "streamer-x")
    retry.create_time.CopyFrom(ts(later(-60)))
    again = await platform.register_room(retry, request_id=request_id)
    assert again == first


# --- GetConfigurationOptions and ConfigureResources -------------------------------------


async def test_configure_validation_matches_the_configuration_options(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    room_id = room.room_id
    streamer = room.streamer
    viewer = clients("viewer", unique("viewer"))
    options = (await streamer.get_configuration_options(room_id)).options
    existing = (await streamer.configure_resources(room_id, create_pool=fixed_pool(room_id))).pool
    before = await snapshot_of(viewer, room_id)

    def pool(**changes: Any) -> svc.CreatePool:
        spec = fixed_pool(room_id)
        for name, value in changes.items():
            if isinstance(value, Message):
                getattr(spec, name).CopyFrom(value)
            else:
                setattr(spec, name, value)
        return spec

    def terms(**values: Any) -> res.CouponTerms:
        return res.CouponTerms(**values)

    fixed = res.COUPON_KIND_FIXED_AMOUNT
    percent = res.COUPON_KIND_PERCENT_OFF
    min_validity = options.min_validity.seconds
    max_validity = options.max_validity.seconds
    cases: list[tuple[svc.CreatePool, str]] = [
        (pool(total_quantity=options.quantity.max + 1), "create_pool.total_quantity"),
        (pool(total_quantity=options.quantity.min - 1), "create_pool.total_quantity"),
        (pool(per_viewer_limit=options.per_viewer_limit.max + 1), "create_pool.per_viewer_limit"),
        (pool(per_viewer_limit=options.per_viewer_limit.min - 1), "create_pool.per_viewer_limit"),
        (pool(title=""), "create_pool.title"),
        (pool(title="t" * 101), "create_pool.title"),
        # PostgreSQL text cannot hold NUL: refused on every backend, not stored on some.
        (pool(title="tea\x00"), "create_pool.title"),
        (
            pool(terms=terms(kind=fixed, amount_off_minor=options.amount_off_minor.max + 1)),
            "create_pool.terms.amount_off_minor",
        ),
        (
            pool(terms=terms(kind=percent, percent_off=options.percent_off.max + 1)),
            "create_pool.terms.percent_off",
        ),
        (pool(terms=terms(amount_off_minor=100)), "create_pool.terms.kind"),
        (
            pool(terms=terms(kind=fixed, amount_off_minor=100, min_spend_minor=-1)),
            "create_pool.terms.min_spend_minor",
        ),
        (
            pool(target=res.TargetGoods(goods_ids=[f"{unique('room')}-tea"])),
            "create_pool.target.goods_ids[0]",
        ),
        (
            pool(target=res.TargetGoods(goods_ids=[f"{room_id}-tea", "elsewhere-goods"])),
            "create_pool.target.goods_ids[1]",
        ),
        # shop-a sells a featured goods but is not linked to the room.
        (pool(target=res.TargetGoods(shop_ids=["shop-a"])), "create_pool.target.shop_ids[0]"),
        (pool(target=res.TargetGoods()), "create_pool.target"),
        (pool(validity=res.CouponValidity()), "create_pool.validity"),
        (
            pool(validity=res.CouponValidity(valid_for=duration(min_validity - 1))),
            "create_pool.validity.valid_for",
        ),
        (
            pool(validity=res.CouponValidity(valid_for=duration(max_validity + 1))),
            "create_pool.validity.valid_for",
        ),
        (
            pool(
                claim_start_time=ts(
                    later(options.max_claim_start_delay.seconds + 3600),
                )
            ),
            "create_pool.claim_start_time",
        ),
        (
            pool(claim_end_time=ts(later(max(options.min_claim_window.seconds - 5, 1)))),
            "create_pool.claim_end_time",
        ),
    ]
    for spec, field in cases:
        await rejected(streamer.configure_resources(room_id, create_pool=spec), field)
    await rejected(
        streamer.configure_resources(
            room_id, create_pool=fixed_pool(room_id), request_id="not-a-uuid"
        ),
        "request_id",
    )
    await rejected(
        streamer.stub.ConfigureResources(
            svc.ConfigureResourcesRequest(request_id=new_request_id(), room_id=room_id),
            metadata=token_md(streamer),
        ),
        "operation",
    )
    for add, field in [
        (svc.AddStock(pool_id="", expected_version=1, quantity=1), "add_stock.pool_id"),
        (
            svc.AddStock(pool_id=existing.pool_id, expected_version=1, quantity=0),
            "add_stock.quantity",
        ),
        (
            svc.AddStock(
                pool_id=existing.pool_id,
                expected_version=1,
                quantity=options.stock_increment.max + 1,
            ),
            "add_stock.quantity",
        ),
    ]:
        await rejected(streamer.configure_resources(room_id, add_stock=add), field)
    assert await snapshot_of(viewer, room_id) == before

    # The boundaries themselves, and every goods and shop the options offer, are accepted.
    everything = res.TargetGoods(
        goods_ids=[g.goods.goods_id for g in options.goods],
        shop_ids=[s.shop_id for s in options.shops],
    )
    at_max = pool(
        total_quantity=options.quantity.max,
        per_viewer_limit=options.per_viewer_limit.max,
        target=everything,
        validity=res.CouponValidity(valid_for=duration(max_validity)),
    )
    created = (await streamer.configure_resources(room_id, create_pool=at_max)).pool
    assert created.total_quantity == options.quantity.max
    assert created.per_viewer_limit == options.per_viewer_limit.max
    at_min = pool(
        total_quantity=options.quantity.min,
        validity=res.CouponValidity(valid_for=duration(min_validity)),
    )
    await streamer.configure_resources(room_id, create_pool=at_min)
    # Stock added to a full pool would take it past the quantity range.
    after = await snapshot_of(viewer, room_id)
    await rejected(
        streamer.configure_resources(
            room_id,
            add_stock=svc.AddStock(
                pool_id=created.pool_id, expected_version=created.version, quantity=1
            ),
        ),
        "add_stock.quantity",
    )
    assert await snapshot_of(viewer, room_id) == after


async def test_configure_request_id_reuse_changes_nothing_and_a_retry_gets_the_same_pool(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    viewer = clients("viewer", unique("viewer"))
    request_id = new_request_id()
    spec = fixed_pool(room.room_id)
    first = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=spec, request_id=request_id
        )
    ).pool
    before = await snapshot_of(viewer, room.room_id)
    renamed = fixed_pool(room.room_id)
    renamed.title = "another title"
    error = await rejected(
        room.streamer.configure_resources(room.room_id, create_pool=renamed, request_id=request_id),
        "request_id",
    )
    assert error.reason == "REQUEST_ID_REUSED"
    error = await rejected(
        room.streamer.configure_resources(
            room.room_id,
            add_stock=svc.AddStock(pool_id=first.pool_id, expected_version=1, quantity=1),
            request_id=request_id,
        ),
        "request_id",
    )
    assert error.reason == "REQUEST_ID_REUSED"
    retried = (
        await room.streamer.configure_resources(
            room.room_id, create_pool=spec, request_id=request_id
        )
    ).pool
    assert retried.pool_id == first.pool_id
    assert retried.version == first.version == 1
    sequence, pools = await snapshot_of(viewer, room.room_id)
    assert (sequence, pools) == before
    assert [p.pool_id for p in pools] == [first.pool_id]
    assert pools[0].title == spec.title


async def test_configure_not_found_conflict_and_closed(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    streamer = room.streamer
    viewer = clients("viewer", unique("viewer"))
    pool = (
        await streamer.configure_resources(room.room_id, create_pool=fixed_pool(room.room_id))
    ).pool
    # A second room of the same streamer, with a pool of its own.
    platform = clients("platform", unique("platform"))
    other_room = unique("room")
    await platform.register_room(room_message(other_room, room.streamer_id))
    other_pool = (
        await streamer.configure_resources(other_room, create_pool=fixed_pool(other_room))
    ).pool
    before = await snapshot_of(viewer, room.room_id)

    for pool_id in ("pool_00000000000000000000", other_pool.pool_id):
        with pytest.raises(NotFoundError):
            await streamer.configure_resources(
                room.room_id,
                add_stock=svc.AddStock(pool_id=pool_id, expected_version=1, quantity=1),
            )
        with pytest.raises(NotFoundError):
            await streamer.configure_resources(
                room.room_id, stop_pool=svc.StopPool(pool_id=pool_id, expected_version=1)
            )

    with pytest.raises(ConflictError) as conflict:
        await streamer.configure_resources(
            room.room_id,
            add_stock=svc.AddStock(
                pool_id=pool.pool_id, expected_version=pool.version + 1, quantity=1
            ),
        )
    assert conflict.value.code == Code.ABORTED
    assert conflict.value.reason == "VERSION_CONFLICT"
    assert await snapshot_of(viewer, room.room_id) == before

    changed = (
        await streamer.configure_resources(
            room.room_id,
            add_stock=svc.AddStock(pool_id=pool.pool_id, expected_version=pool.version, quantity=1),
        )
    ).pool
    assert (changed.version, changed.total_quantity) == (pool.version + 1, pool.total_quantity + 1)
    with pytest.raises(ConflictError) as stale:
        await streamer.configure_resources(
            room.room_id,
            add_stock=svc.AddStock(pool_id=pool.pool_id, expected_version=pool.version, quantity=1),
        )
    assert stale.value.reason == "VERSION_CONFLICT"

    stopped = (
        await streamer.configure_resources(
            room.room_id,
            stop_pool=svc.StopPool(pool_id=pool.pool_id, expected_version=changed.version),
        )
    ).pool
    assert stopped.state == res.POOL_STATE_CLOSED
    closed = await snapshot_of(viewer, room.room_id)
    with pytest.raises(FailedPreconditionError) as after_stop:
        await streamer.configure_resources(
            room.room_id,
            add_stock=svc.AddStock(
                pool_id=pool.pool_id, expected_version=stopped.version, quantity=1
            ),
        )
    assert after_stop.value.reason == "POOL_CLOSED"
    assert [v.type for v in after_stop.value.precondition_violations] == ["POOL_CLOSED"]
    assert await snapshot_of(viewer, room.room_id) == closed


# --- Allocate ---------------------------------------------------------------------------


async def _room_with_pools(
    make_room: RoomMaker, count: int, **pool_args: Any
) -> tuple[RoomFixture, list[res.Pool]]:
    room = await make_room()
    pools = [
        (
            await room.streamer.configure_resources(
                room.room_id, create_pool=fixed_pool(room.room_id, **pool_args)
            )
        ).pool
        for _ in range(count)
    ]
    return room, pools


async def test_allocate_rejects_bad_fields(make_room: RoomMaker, clients: ClientFactory) -> None:
    room, (pool,) = await _room_with_pools(make_room, 1)
    viewer = clients("viewer", unique("viewer"))
    before = await snapshot_of(viewer, room.room_id)
    await rejected(viewer.allocate(pool.pool_id, request_id="not-a-uuid"), "request_id")
    await rejected(
        viewer.stub.Allocate(
            svc.AllocateRequest(request_id="", pool_id=pool.pool_id),
            metadata=token_md(viewer),
        ),
        "request_id",
    )
    await rejected(viewer.allocate(""), "pool_id")
    await rejected(viewer.allocate("pool with spaces"), "pool_id")
    await rejected(viewer.allocate("p" * 65), "pool_id")
    with pytest.raises(NotFoundError):
        await viewer.allocate("pool_00000000000000000000")
    assert await snapshot_of(viewer, room.room_id) == before
    assert list((await viewer.list_coupons()).coupons) == []


async def test_allocate_request_id_reuse_changes_nothing_and_a_retry_gets_the_same_coupon(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room, (pool_a, pool_b) = await _room_with_pools(make_room, 2, total=5, limit=3)
    viewer = clients("viewer", unique("viewer"))
    request_id = new_request_id()
    first = await viewer.allocate(pool_a.pool_id, request_id=request_id)
    assert first.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    before = await snapshot_of(viewer, room.room_id)
    error = await rejected(viewer.allocate(pool_b.pool_id, request_id=request_id), "request_id")
    assert error.reason == "REQUEST_ID_REUSED"
    retried = await viewer.allocate(pool_a.pool_id, request_id=request_id)
    assert retried.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    assert retried.coupon.code == first.coupon.code
    assert retried.coupon.coupon_id == first.coupon.coupon_id
    assert retried.remaining_quantity == first.remaining_quantity == 4
    _, pools = await snapshot_of(viewer, room.room_id)
    assert pools == before[1]
    remaining = {p.pool_id: p.remaining_quantity for p in pools}
    assert remaining == {pool_a.pool_id: 4, pool_b.pool_id: 5}
    listed = (await viewer.list_coupons()).coupons
    assert [c.code for c in listed] == [first.coupon.code]


# --- ListCoupons ------------------------------------------------------------------------


async def test_list_coupons_rejects_bad_fields(clients: ClientFactory) -> None:
    viewer = clients("viewer", unique("viewer"))
    await rejected(viewer.list_coupons(page_size=-1), "page_size")
    await rejected(viewer.list_coupons(page_size=201), "page_size")
    await rejected(viewer.list_coupons(page_token="not a token"), "page_token")
    await rejected(viewer.list_coupons(page_token="%%%"), "page_token")
    await rejected(viewer.list_coupons(room_id="room with spaces"), "room_id")
    assert list((await viewer.list_coupons(page_size=200)).coupons) == []


async def test_list_coupons_rejects_a_forged_page_token_with_a_huge_number(
    clients: ClientFactory,
) -> None:
    viewer = clients("viewer", unique("viewer"))
    forged = base64.urlsafe_b64encode(b"99999999999999999999999|x").decode()
    await rejected(viewer.list_coupons(page_token=forged), "page_token")


# --- RedeemCoupon and ReleaseCoupon -----------------------------------------------------


async def test_redeem_rejects_bad_fields_and_redeems_nothing(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room, (pool,) = await _room_with_pools(make_room, 1, limit=2)
    viewer_id = unique("viewer")
    viewer = clients("viewer", viewer_id)
    orders = clients("order_service", unique("orders"))
    coupon = (await viewer.allocate(pool.pool_id)).coupon
    order_id = unique("order")
    good = lines(room.room_id)

    def bad_line(**changes: Any) -> list[res.OrderLine]:
        line = lines(room.room_id)[0]
        for name, value in changes.items():
            setattr(line, name, value)
        return [line]

    two = [*lines(room.room_id), res.OrderLine(goods_id="", shop_id="shop-a", quantity=1)]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"order_id": ""}, "order_id"),
        ({"order_id": "order with spaces"}, "order_id"),
        ({"coupon_code": ""}, "coupon_code"),
        ({"coupon_code": "c" * 65}, "coupon_code"),
        ({"viewer_id": ""}, "viewer_id"),
        ({"currency_code": "cny"}, "currency_code"),
        ({"currency_code": ""}, "currency_code"),
        ({"lines": []}, "lines"),
        ({"lines": bad_line(quantity=0)}, "lines[0].quantity"),
        ({"lines": bad_line(quantity=10_001)}, "lines[0].quantity"),
        ({"lines": bad_line(unit_price_minor=-1)}, "lines[0].unit_price_minor"),
        ({"lines": bad_line(goods_id="goods with spaces")}, "lines[0].goods_id"),
        ({"lines": bad_line(shop_id="")}, "lines[0].shop_id"),
        ({"lines": two}, "lines[1].goods_id"),
        ({"lines": good * 501}, "lines"),
    ]
    for changes, field in cases:
        args: dict[str, Any] = {
            "order_id": order_id,
            "coupon_code": coupon.code,
            "viewer_id": viewer_id,
            "currency_code": CURRENCY,
            "lines": good,
            **changes,
        }
        await rejected(orders.redeem_coupon(**args), field)
    listed = (await viewer.list_coupons()).coupons
    assert [(c.code, c.state, c.order_id) for c in listed] == [
        (coupon.code, res.COUPON_STATE_AVAILABLE, "")
    ]
    # Nothing was redeemed on the order, and it was not burned either.
    with pytest.raises(NotFoundError):
        await orders.release_coupon(order_id)
    with pytest.raises(NotFoundError):
        await orders.redeem_coupon(order_id, "x" * 22, viewer_id, CURRENCY, good)
    with pytest.raises(NotFoundError):  # no code holds NUL (PostgreSQL cannot even compare it)
        await orders.redeem_coupon(order_id, coupon.code + "\x00", viewer_id, CURRENCY, good)
    redeemed = (
        await orders.redeem_coupon(order_id, coupon.code, viewer_id, CURRENCY, good)
    ).redemption
    assert (redeemed.order_id, redeemed.discount_minor) == (order_id, 2000)
    again = (
        await orders.redeem_coupon(order_id, coupon.code, viewer_id, CURRENCY, good)
    ).redemption
    assert again == redeemed
    other = await viewer.allocate(pool.pool_id)
    assert other.outcome == svc.ALLOCATION_OUTCOME_GRANTED
    with pytest.raises(AlreadyExistsError):
        await orders.redeem_coupon(order_id, other.coupon.code, viewer_id, CURRENCY, good)


async def test_release_rejects_bad_fields_and_unknown_orders(clients: ClientFactory) -> None:
    orders = clients("order_service", unique("orders"))
    await rejected(orders.release_coupon(""), "order_id")
    await rejected(orders.release_coupon("order with spaces"), "order_id")
    await rejected(orders.release_coupon("o" * 65), "order_id")
    with pytest.raises(NotFoundError):
        await orders.release_coupon(unique("order"))


# --- StreamAllocationInfo ---------------------------------------------------------------


async def test_stream_rejects_bad_fields_and_unknown_rooms(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    viewer = clients("viewer", unique("viewer"))
    # The SDK refuses a negative resume point itself: send it through the raw stub.
    call = viewer.stub.StreamAllocationInfo(
        svc.StreamAllocationInfoRequest(room_id=room.room_id, resume_after_sequence=-1),
        metadata=token_md(viewer),
        timeout=5.0,
    )
    await rejected(call.read(), "resume_after_sequence")
    await rejected(first_item(viewer, ""), "room_id")
    await rejected(first_item(viewer, "room with spaces"), "room_id")
    with pytest.raises(NotFoundError):
        await first_item(viewer, unique("room"))
    item = await first_item(viewer, room.room_id)
    assert item.WhichOneof("payload") == "snapshot"


# --- undecodable request bytes ----------------------------------------------------------

CALLERS = {
    "RegisterRoom": "platform",
    "GetConfigurationOptions": "streamer",
    "ConfigureResources": "streamer",
    "Allocate": "viewer",
    "ListCoupons": "viewer",
    "RedeemCoupon": "order_service",
    "ReleaseCoupon": "order_service",
    STREAM: "viewer",
}
GARBAGE = {"all-ones": b"\xff\xff\xff\xff", "truncated": b"\x0a\x05ab"}


def _identity(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize("garbage", list(GARBAGE))
@pytest.mark.parametrize("rpc", list(CALLERS))
async def test_undecodable_bytes_are_invalid_argument(
    server: ServerHandle, rpc: str, garbage: str
) -> None:
    token = mint_token(unique(CALLERS[rpc]), CALLERS[rpc], key=TOKEN_KEY)
    metadata = (("authorization", f"Bearer {token}"),)
    path = SERVICE_PATH + rpc
    async with grpc.aio.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if rpc == STREAM:
                call = channel.unary_stream(
                    path, request_serializer=_identity, response_deserializer=_identity
                )(GARBAGE[garbage], metadata=metadata, timeout=5.0)
                await call.read()
            else:
                await channel.unary_unary(
                    path, request_serializer=_identity, response_deserializer=_identity
                )(GARBAGE[garbage], metadata=metadata, timeout=5.0)
    error = info.value
    assert error.code() == Code.INVALID_ARGUMENT, (error.code(), error.details())
    assert "Traceback" not in (error.details() or "")
    mapped: LiveResourceError = from_rpc_error(error)
    assert mapped.reason == "UNDECODABLE_REQUEST"
    assert mapped.field_violations


async def test_expected_refusals_carry_no_traceback(
    make_room: RoomMaker, clients: ClientFactory
) -> None:
    room = await make_room()
    streamer = room.streamer
    failures: list[LiveResourceError] = []
    for call in (
        streamer.configure_resources(room.room_id, create_pool=svc.CreatePool()),
        clients("viewer", unique("viewer")).allocate("pool_00000000000000000000"),
        clients("order_service", unique("orders")).release_coupon(unique("order")),
    ):
        try:
            await call
        except LiveResourceError as exc:
            failures.append(exc)
    assert len(failures) == 3
    for failure in failures:
        assert "Traceback" not in failure.message
        assert failure.code != Code.INTERNAL
