"""A viewer's coupons, and the order service redeeming and releasing them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace

from server.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from server.domain.models import Coupon, OrderLine, Principal, Redemption, Role
from server.domain.pricing import check_redeemable
from server.domain.validation import check_currency, check_id, check_range
from server.service.access import require_role
from server.service.context import ServiceContext
from server.store import codec

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_ORDER_LINES = 500


def _encode_token(coupon: Coupon) -> str:
    raw = f"{codec.to_us(coupon.valid_from)}|{coupon.coupon_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[int, str]:
    try:
        at, coupon_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        position = int(at)
        if not 0 <= position < 2**63 or not coupon_id:
            raise ValueError("out of range")
        return position, coupon_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token this server gave")]
        ) from exc


async def list_coupons(
    ctx: ServiceContext, principal: Principal, room_id: str, page_size: int, page_token: str
) -> tuple[list[Coupon], str]:
    """The caller's coupons, newest first, one page at a time."""
    require_role(principal, Role.VIEWER)
    out: list[FieldViolation] = []
    if room_id:
        check_id(room_id, "room_id", out)
    check_range(page_size, (0, MAX_PAGE_SIZE), "page_size", out)
    if out:
        raise InvalidArgument(out)
    before = _decode_token(page_token) if page_token else None
    size = page_size or DEFAULT_PAGE_SIZE
    async with ctx.store.transaction(write=False) as tx:
        found = await tx.list_coupons(principal.subject, room_id, before, size + 1)
    page = found[:size]
    return page, _encode_token(page[-1]) if len(found) > size else ""


def _check_order(
    order_id: str, code: str, viewer_id: str, currency_code: str, lines: list[OrderLine]
) -> None:
    out: list[FieldViolation] = []
    check_id(order_id, "order_id", out)
    if not code:
        out.append(FieldViolation("coupon_code", "is required"))
    elif len(code) > 64:
        out.append(FieldViolation("coupon_code", "must be at most 64 characters"))
    check_id(viewer_id, "viewer_id", out)
    check_currency(currency_code, "currency_code", out)
    if not 1 <= len(lines) <= MAX_ORDER_LINES:
        out.append(FieldViolation("lines", f"must hold 1 to {MAX_ORDER_LINES} lines"))
    for i, line in enumerate(lines[:MAX_ORDER_LINES]):
        check_id(line.goods_id, f"lines[{i}].goods_id", out)
        check_id(line.shop_id, f"lines[{i}].shop_id", out)
        check_range(line.unit_price_minor, (0, 10**13), f"lines[{i}].unit_price_minor", out)
        check_range(line.quantity, (1, 10_000), f"lines[{i}].quantity", out)
    if out:
        raise InvalidArgument(out)


async def redeem(
    ctx: ServiceContext,
    principal: Principal,
    order_id: str,
    code: str,
    viewer_id: str,
    currency_code: str,
    lines: list[OrderLine],
    fingerprint: str,
) -> Redemption:
    """Redeem a coupon on an order; idempotent per order id."""
    require_role(principal, Role.ORDER_SERVICE)
    _check_order(order_id, code, viewer_id, currency_code, lines)
    async with ctx.store.transaction(write=True) as tx:
        existing = await tx.get_redemption(order_id)
        if existing is not None:
            redemption, recorded_fingerprint = existing
            if recorded_fingerprint != fingerprint:
                raise AlreadyExists(
                    "order",
                    order_id,
                    f"order {order_id!r} already has a coupon redeemed with other parameters",
                )
            return redemption
        coupon = await tx.get_coupon_by_code(code)
        if coupon is None:
            raise NotFound("coupon", code)
        now = ctx.clock()
        subtotal, discount = check_redeemable(coupon, viewer_id, currency_code, lines, now)
        redemption = Redemption(
            order_id=order_id,
            coupon=replace(coupon, redeemed_order_id=order_id),
            eligible_subtotal_minor=subtotal,
            discount_minor=discount,
            redeemed_at=now,
        )
        await tx.set_coupon_order(coupon.coupon_id, order_id)
        await tx.insert_redemption(redemption, fingerprint)
        return redemption


async def release(ctx: ServiceContext, principal: Principal, order_id: str) -> Redemption:
    """Give back the coupon of a cancelled order; idempotent per order id."""
    require_role(principal, Role.ORDER_SERVICE)
    out: list[FieldViolation] = []
    check_id(order_id, "order_id", out)
    if out:
        raise InvalidArgument(out)
    async with ctx.store.transaction(write=True) as tx:
        existing = await tx.get_redemption(order_id)
        if existing is None:
            raise NotFound("redemption", order_id)
        redemption, _ = existing
        if redemption.released_at is not None:
            return redemption
        now = ctx.clock()
        await tx.mark_released(order_id, now)
        await tx.set_coupon_order(redemption.coupon.coupon_id, None)
        return replace(
            redemption, released_at=now, coupon=replace(redemption.coupon, redeemed_order_id=None)
        )
