"""The bounds a streamer's configuration must respect, shared by the form and the validator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from server.domain.models import CouponKind, Goods, Room, Shop


@dataclass(frozen=True, slots=True)
class Limits:
    """Service-wide configuration ranges (inclusive); one place for the form and the checks."""

    quantity: tuple[int, int] = (1, 1_000_000)
    stock_increment: tuple[int, int] = (1, 1_000_000)
    per_viewer_limit: tuple[int, int] = (1, 10)
    amount_off_minor: tuple[int, int] = (1, 100_000_000)
    percent_off: tuple[int, int] = (1, 99)
    max_claim_start_delay: timedelta = timedelta(days=30)
    min_claim_window: timedelta = timedelta(seconds=10)
    max_claim_window: timedelta = timedelta(days=7)
    min_validity: timedelta = timedelta(minutes=1)
    max_validity: timedelta = timedelta(days=365)
    coupon_kinds: tuple[CouponKind, ...] = field(
        default=(CouponKind.FIXED_AMOUNT, CouponKind.PERCENT_OFF)
    )


@dataclass(frozen=True, slots=True)
class TargetableGoods:
    """A goods a pool may target and where it comes from."""

    goods: Goods
    featured: bool
    from_linked_shop: bool


@dataclass(frozen=True, slots=True)
class ConfigurationOptions:
    """Everything the streamer's console needs to build its form for one room."""

    room: Room
    goods: tuple[TargetableGoods, ...]
    shops: tuple[Shop, ...]
    limits: Limits


def options_for(room: Room, limits: Limits) -> ConfigurationOptions:
    """The options of a room: its targetable goods and shops under the service limits."""
    featured = {g.goods_id for g in room.featured_goods}
    in_shops = {g.goods_id for s in room.linked_shops for g in s.goods}
    goods = tuple(
        TargetableGoods(g, featured=g.goods_id in featured, from_linked_shop=g.goods_id in in_shops)
        for g in room.goods_by_id().values()
    )
    return ConfigurationOptions(room=room, goods=goods, shops=room.linked_shops, limits=limits)
