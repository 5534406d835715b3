"""A viewer's coupons (the order service's side is in checkout.py)."""

from __future__ import annotations

import base64
import binascii

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.models import Coupon, Principal, Role
from server.domain.validation import check_id, check_range
from server.service.access import require_role
from server.service.context import ServiceContext
from server.store import codec

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


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
