"""Room registration rules and the configuration options a room offers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.domain.errors import InvalidArgument
from server.domain.models import Goods, Room, Shop
from server.domain.options import Limits, options_for
from server.domain.rooms import validate_room

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
PREFIX = "room"


def room(**changes: Any) -> Room:
    """Featured tea (shop-a, also listed there) and cup (shop-b, not linked); shop-a sells pot."""
    base = Room(
        room_id="room-1",
        streamer_id="streamer-1",
        currency_code="CNY",
        featured_goods=(Goods("tea", "shop-a", "Tea"), Goods("cup", "shop-b", "Cup")),
        linked_shops=(
            Shop("shop-a", "Shop A", (Goods("tea", "shop-a", "Tea"), Goods("pot", "shop-a"))),
        ),
        created_at=NOW - timedelta(days=1),
    )
    return replace(base, **changes)


def violated_fields(r: Room) -> list[str]:
    with pytest.raises(InvalidArgument) as exc:
        validate_room(r, PREFIX)
    return [v.field for v in exc.value.violations]


# --- validate_room ----------------------------------------------------------------------


def test_validate_room_accepts_a_featured_goods_also_listed_in_its_own_linked_shop() -> None:
    validate_room(room(), PREFIX)


@pytest.mark.parametrize(
    "r",
    [
        room(featured_goods=(), linked_shops=()),
        room(room_id="a" * 64, streamer_id="A.b_c:d-9"),
        room(linked_shops=(Shop("shop-a", "A"), Shop("shop-b", "B", (Goods("cup", "shop-b"),)))),
    ],
    ids=["empty-catalogue", "longest-ids", "featured-in-own-second-shop"],
)
def test_validate_room_accepts_well_formed_rooms(r: Room) -> None:
    validate_room(r, PREFIX)


@pytest.mark.parametrize(
    ("r", "field"),
    [
        (room(room_id=""), "room.room_id"),
        (room(room_id="room 1"), "room.room_id"),
        (room(room_id="a" * 65), "room.room_id"),
        (room(room_id="räum"), "room.room_id"),
        (room(streamer_id=""), "room.streamer_id"),
        (room(streamer_id="streamer/1"), "room.streamer_id"),
        (room(currency_code="cny"), "room.currency_code"),
        (room(currency_code="CN"), "room.currency_code"),
        (room(currency_code="CNYY"), "room.currency_code"),
        (room(currency_code=""), "room.currency_code"),
        (
            room(featured_goods=(Goods("bad id", "shop-a"),), linked_shops=()),
            "room.featured_goods[0].goods_id",
        ),
        (
            room(featured_goods=(Goods("tea", ""),), linked_shops=()),
            "room.featured_goods[0].shop_id",
        ),
        (
            room(featured_goods=(Goods("tea", "shop-a"), Goods("tea", "shop-a")), linked_shops=()),
            "room.featured_goods[1].goods_id",
        ),
        (
            room(linked_shops=(Shop("shop-a", "A", (Goods("pot", "shop-a"),) * 2),)),
            "room.linked_shops[0].goods[1].goods_id",
        ),
        (
            room(
                linked_shops=(
                    Shop("shop-a", "A", (Goods("pot", "shop-a"),)),
                    Shop("shop-c", "C", (Goods("pot", "shop-c"),)),
                )
            ),
            "room.linked_shops[1].goods[0].goods_id",
        ),
        (
            room(linked_shops=(Shop("shop-a", "A", (Goods("pot", "shop-z"),)),)),
            "room.linked_shops[0].goods[0].shop_id",
        ),
        (
            # cup is featured as shop-b's, but shop-c also lists it as its own.
            room(linked_shops=(Shop("shop-c", "C", (Goods("cup", "shop-c"),)),)),
            "room.linked_shops[0].goods[0].goods_id",
        ),
        (
            room(linked_shops=(Shop("shop-a", "A"), Shop("shop-a", "A again"))),
            "room.linked_shops[1].shop_id",
        ),
        (
            room(linked_shops=(Shop("shop a", "A"),)),
            "room.linked_shops[0].shop_id",
        ),
        (
            room(featured_goods=(Goods("tea", "shop-a", "T" * 201),), linked_shops=()),
            "room.featured_goods[0].title",
        ),
    ],
    ids=[
        "empty-room-id",
        "room-id-space",
        "room-id-too-long",
        "room-id-non-ascii",
        "empty-streamer-id",
        "streamer-id-slash",
        "currency-lower-case",
        "currency-two-letters",
        "currency-four-letters",
        "currency-empty",
        "featured-goods-bad-id",
        "featured-goods-no-shop",
        "featured-goods-repeated",
        "shop-goods-repeated",
        "goods-in-two-shops",
        "shop-goods-other-shop-id",
        "featured-with-another-shop",
        "shop-repeated",
        "shop-bad-id",
        "title-too-long",
    ],
)
def test_validate_room_rejects_with_the_field_path(r: Room, field: str) -> None:
    assert violated_fields(r) == [field]


@pytest.mark.parametrize(
    ("r", "field"),
    [
        (room(room_id="room-1\n"), "room.room_id"),
        (room(streamer_id="streamer-1\n"), "room.streamer_id"),
        (room(currency_code="CNY\n"), "room.currency_code"),
    ],
    ids=["room-id", "streamer-id", "currency"],
)
def test_validate_room_rejects_a_trailing_newline(r: Room, field: str) -> None:
    assert violated_fields(r) == [field]


def test_validate_room_reports_every_violation_at_once() -> None:
    fields = violated_fields(room(room_id="", currency_code="usd"))
    assert set(fields) == {"room.room_id", "room.currency_code"}


# --- options_for ------------------------------------------------------------------------


def test_options_for_marks_featured_and_linked_shop_goods() -> None:
    options = options_for(room(), Limits())
    flags = {t.goods.goods_id: (t.featured, t.from_linked_shop) for t in options.goods}
    assert flags == {
        "tea": (True, True),  # featured and listed in linked shop-a
        "cup": (True, False),  # featured, its shop-b is not linked
        "pot": (False, True),  # only in linked shop-a
    }


def test_options_for_lists_each_goods_once_featured_first() -> None:
    options = options_for(room(), Limits())
    assert [t.goods.goods_id for t in options.goods] == ["tea", "cup", "pot"]


def test_options_for_passes_the_room_shops_and_limits_through() -> None:
    r = room()
    limits = Limits(per_viewer_limit=(1, 3))
    options = options_for(r, limits)
    assert options.room == r
    assert options.shops == r.linked_shops
    assert options.limits == limits


def test_options_for_an_empty_room_offers_no_goods() -> None:
    options = options_for(room(featured_goods=(), linked_shops=()), Limits())
    assert options.goods == ()
    assert options.shops == ()
