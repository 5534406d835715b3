"""Room registration rules."""

from __future__ import annotations

from server.domain.errors import FieldViolation, require
from server.domain.models import Room
from server.domain.validation import check_currency, check_id, check_text

_MAX_GOODS = 1000
_MAX_SHOPS = 100


def validate_room(room: Room, prefix: str) -> None:
    """Raise InvalidArgument unless the room is well formed."""
    out: list[FieldViolation] = []
    check_id(room.room_id, f"{prefix}.room_id", out)
    check_id(room.streamer_id, f"{prefix}.streamer_id", out)
    check_currency(room.currency_code, f"{prefix}.currency_code", out)
    if len(room.featured_goods) > _MAX_GOODS:
        out.append(FieldViolation(f"{prefix}.featured_goods", f"at most {_MAX_GOODS}"))
    if len(room.linked_shops) > _MAX_SHOPS:
        out.append(FieldViolation(f"{prefix}.linked_shops", f"at most {_MAX_SHOPS}"))
    seen_goods: set[str] = set()
    for i, g in enumerate(room.featured_goods):
        field = f"{prefix}.featured_goods[{i}]"
        check_id(g.goods_id, f"{field}.goods_id", out)
        check_id(g.shop_id, f"{field}.shop_id", out)
        check_text(g.title, f"{field}.title", 200, out)
        if g.goods_id in seen_goods:
            out.append(FieldViolation(f"{field}.goods_id", f"{g.goods_id!r} is repeated"))
        seen_goods.add(g.goods_id)
    featured = {g.goods_id: g.shop_id for g in room.featured_goods}
    seen_goods = set[str]()
    seen_shops: set[str] = set()
    for i, s in enumerate(room.linked_shops):
        field = f"{prefix}.linked_shops[{i}]"
        check_id(s.shop_id, f"{field}.shop_id", out)
        check_text(s.name, f"{field}.name", 200, out)
        if s.shop_id in seen_shops:
            out.append(FieldViolation(f"{field}.shop_id", f"{s.shop_id!r} is repeated"))
        seen_shops.add(s.shop_id)
        if len(s.goods) > _MAX_GOODS:
            out.append(FieldViolation(f"{field}.goods", f"at most {_MAX_GOODS}"))
        for j, g in enumerate(s.goods):
            gfield = f"{field}.goods[{j}]"
            check_id(g.goods_id, f"{gfield}.goods_id", out)
            check_text(g.title, f"{gfield}.title", 200, out)
            if g.shop_id != s.shop_id:
                out.append(FieldViolation(f"{gfield}.shop_id", "must be the shop's own id"))
            if g.goods_id in seen_goods:
                out.append(FieldViolation(f"{gfield}.goods_id", f"{g.goods_id!r} is repeated"))
            elif featured.get(g.goods_id, g.shop_id) != g.shop_id:
                out.append(
                    FieldViolation(
                        f"{gfield}.goods_id", f"{g.goods_id!r} is featured with another shop"
                    )
                )
            seen_goods.add(g.goods_id)
    require(out)
