"""JSON and integer-time encodings of domain records for the store's columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

from server.domain.eligibility import Eligibility
from server.domain.models import (
    AllocationResult,
    CloseReason,
    Coupon,
    CouponKind,
    CouponTerms,
    Goods,
    Outcome,
    Pool,
    PoolState,
    Redemption,
    RedemptionState,
    ReleaseReason,
    Shop,
    Target,
    Validity,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime. Five calls per grant (its coupon row
    and its recorded answer): the divisor is built once (0.5 µs a call instead of 1.5)."""
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=value)


def opt_us(value: datetime | None) -> int | None:
    """to_us, passing None through."""
    return None if value is None else to_us(value)


def opt_dt(value: int | None) -> datetime | None:
    """from_us, passing None through."""
    return None if value is None else from_us(value)


def dumps(value: Any) -> str:
    """Compact, stable JSON."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def goods_to_dict(g: Goods) -> dict[str, str]:
    return {"goods_id": g.goods_id, "shop_id": g.shop_id, "title": g.title}


def goods_from_dict(d: dict[str, str]) -> Goods:
    return Goods(d["goods_id"], d["shop_id"], d.get("title", ""))


def catalogue_to_json(featured: tuple[Goods, ...], shops: tuple[Shop, ...]) -> str:
    return dumps(
        {
            "featured": [goods_to_dict(g) for g in featured],
            "shops": [
                {"shop_id": s.shop_id, "name": s.name, "goods": [goods_to_dict(g) for g in s.goods]}
                for s in shops
            ],
        }
    )


def catalogue_from_json(text: str) -> tuple[tuple[Goods, ...], tuple[Shop, ...]]:
    d = json.loads(text)
    featured = tuple(goods_from_dict(g) for g in d["featured"])
    shops = tuple(
        Shop(s["shop_id"], s["name"], tuple(goods_from_dict(g) for g in s["goods"]))
        for s in d["shops"]
    )
    return featured, shops


def terms_to_json(t: CouponTerms) -> str:
    return dumps(
        {
            "kind": t.kind.value,
            "amount_off_minor": t.amount_off_minor,
            "percent_off": t.percent_off,
            "max_discount_minor": t.max_discount_minor,
            "min_spend_minor": t.min_spend_minor,
        }
    )


_TERMS: dict[str, CouponTerms] = {}
_TARGETS: dict[str, Target] = {}
"""Terms and targets by their JSON text (both immutable): every read of a pool gives the
same objects while they do not change, so what is cached by identity downstream (their
JSON, a coupon's wire bytes) stays cached across reads (a grant batch reads its pools)."""
_K = TypeVar("_K")
_V = TypeVar("_V")
_CACHED_MAX = 1024
"""Entries of each of this module's caches (one per pool or per pool's terms: a server holds
far fewer open pools); a full cache starts over."""


def terms_from_json(text: str) -> CouponTerms:
    terms = _TERMS.get(text)
    if terms is None:
        d = json.loads(text)
        terms = CouponTerms(
            CouponKind(d["kind"]),
            d["amount_off_minor"],
            d["percent_off"],
            d["max_discount_minor"],
            d["min_spend_minor"],
        )
        _keep(_TERMS, text, terms)
    return terms


def target_to_json(t: Target) -> str:
    return dumps({"goods_ids": list(t.goods_ids), "shop_ids": list(t.shop_ids)})


def target_from_json(text: str) -> Target:
    target = _TARGETS.get(text)
    if target is None:
        d = json.loads(text)
        target = Target(tuple(d["goods_ids"]), tuple(d["shop_ids"]))
        _keep(_TARGETS, text, target)
    return target


def _keep(cache: dict[_K, _V], key: _K, value: _V) -> None:
    if len(cache) >= _CACHED_MAX:
        cache.clear()
    cache[key] = value


def _opt_seconds(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds())


def _opt_delta(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def eligibility_to_json(e: Eligibility) -> str | None:
    """A pool's rule as JSON (seconds); None when it lets every viewer grab."""
    if not e.restricts:
        return None
    return dumps(
        {
            "followers_only": e.followers_only,
            "min_follow_age_s": _opt_seconds(e.min_follow_age),
            "max_follow_age_s": _opt_seconds(e.max_follow_age),
            "new_buyers_only": e.new_buyers_only,
            "min_watch_time_s": _opt_seconds(e.min_watch_time),
        }
    )


def eligibility_from_json(text: str | None) -> Eligibility:
    if not text:
        return Eligibility()
    d = json.loads(text)
    return Eligibility(
        followers_only=d["followers_only"],
        min_follow_age=_opt_delta(d["min_follow_age_s"]),
        max_follow_age=_opt_delta(d["max_follow_age_s"]),
        new_buyers_only=d["new_buyers_only"],
        min_watch_time=_opt_delta(d["min_watch_time_s"]),
    )


def pool_to_row(p: Pool) -> dict[str, Any]:
    """The pools table row of a pool."""
    return {
        "pool_id": p.pool_id,
        "room_id": p.room_id,
        "title": p.title,
        "terms": terms_to_json(p.terms),
        "target": target_to_json(p.target),
        "currency_code": p.currency_code,
        "total_quantity": p.total_quantity,
        "remaining_quantity": p.remaining_quantity,
        "granted_quantity": p.granted_quantity,
        "withdrawn_quantity": p.withdrawn_quantity,
        "per_viewer_limit": p.per_viewer_limit,
        "claim_start_us": to_us(p.claim_start),
        "claim_end_us": opt_us(p.claim_end),
        "valid_until_us": opt_us(p.validity.valid_until),
        "valid_for_s": None
        if p.validity.valid_for is None
        else int(p.validity.valid_for.total_seconds()),
        "version": p.version,
        "created_at_us": to_us(p.created_at),
        "updated_at_us": to_us(p.updated_at),
        "closed_at_us": opt_us(p.closed_at),
        "close_reason": None if p.close_reason is None else p.close_reason.value,
        "announced_state": p.announced_state.value,
        "stackable": p.stackable,
        "pinned": p.pinned,
        "round": p.round,
        "claim_duration_s": None
        if p.claim_duration is None
        else int(p.claim_duration.total_seconds()),
        "eligibility": eligibility_to_json(p.eligibility),
    }


def pool_from_row(r: Any) -> Pool:
    """A pool from a pools row (a mapping with the table's columns)."""
    valid_for = r["valid_for_s"]
    return Pool(
        pool_id=r["pool_id"],
        room_id=r["room_id"],
        title=r["title"],
        terms=terms_from_json(r["terms"]),
        target=target_from_json(r["target"]),
        total_quantity=r["total_quantity"],
        remaining_quantity=r["remaining_quantity"],
        granted_quantity=r["granted_quantity"],
        withdrawn_quantity=r["withdrawn_quantity"],
        per_viewer_limit=r["per_viewer_limit"],
        claim_start=from_us(r["claim_start_us"]),
        claim_end=opt_dt(r["claim_end_us"]),
        validity=Validity(
            valid_until=opt_dt(r["valid_until_us"]),
            valid_for=None if valid_for is None else timedelta(seconds=valid_for),
        ),
        currency_code=r["currency_code"],
        version=r["version"],
        created_at=from_us(r["created_at_us"]),
        updated_at=from_us(r["updated_at_us"]),
        closed_at=opt_dt(r["closed_at_us"]),
        close_reason=None if r["close_reason"] is None else CloseReason(r["close_reason"]),
        announced_state=PoolState(r["announced_state"]),
        # Events written before the column existed carry no "stackable".
        stackable=bool(r.get("stackable", False)),
        pinned=bool(r.get("pinned", False)),
        round=r.get("round", 1),
        claim_duration=None
        if r.get("claim_duration_s") is None
        else timedelta(seconds=r["claim_duration_s"]),
        eligibility=eligibility_from_json(r.get("eligibility")),
    )


def pool_to_json(p: Pool) -> str:
    return dumps(pool_to_row(p))


def pool_from_json(text: str) -> Pool:
    return pool_from_row(json.loads(text))


_SHARED_JSON: dict[int, tuple[object, str]] = {}
"""JSON of the terms and targets coupons share with their pool, by the object's identity
(kept with the object, so an id is never reused while cached): a grant batch records one
answer per coupon, all with their pool's terms and target."""


def _shared_json(value: CouponTerms | Target) -> str:
    cached = _SHARED_JSON.get(id(value))
    if cached is not None and cached[0] is value:
        return cached[1]
    text = terms_to_json(value) if isinstance(value, CouponTerms) else target_to_json(value)
    _keep(_SHARED_JSON, id(value), (value, text))
    return text


def coupon_to_dict(c: Coupon) -> dict[str, Any]:
    return {
        "coupon_id": c.coupon_id,
        "code": c.code,
        "pool_id": c.pool_id,
        "room_id": c.room_id,
        "viewer_id": c.viewer_id,
        "terms": _shared_json(c.terms),
        "target": _shared_json(c.target),
        "currency_code": c.currency_code,
        "valid_from_us": to_us(c.valid_from),
        "valid_until_us": to_us(c.valid_until),
        "redeemed_order_id": c.redeemed_order_id,
        "lock_expires_at_us": opt_us(c.lock_expires_at),
        "release_count": c.release_count,
        "grant_seq": c.grant_sequence,
        "stackable": c.stackable,
    }


def coupon_from_dict(d: Any) -> Coupon:
    return Coupon(
        coupon_id=d["coupon_id"],
        code=d["code"],
        pool_id=d["pool_id"],
        room_id=d["room_id"],
        viewer_id=d["viewer_id"],
        terms=terms_from_json(d["terms"]),
        target=target_from_json(d["target"]),
        currency_code=d["currency_code"],
        valid_from=from_us(d["valid_from_us"]),
        valid_until=from_us(d["valid_until_us"]),
        redeemed_order_id=d["redeemed_order_id"],
        # Answers recorded before these columns existed do not carry them.
        lock_expires_at=opt_dt(d.get("lock_expires_at_us")),
        release_count=d.get("release_count", 0),
        grant_sequence=d.get("grant_seq", 0),
        stackable=bool(d.get("stackable", False)),
    )


def allocation_to_dict(a: AllocationResult) -> dict[str, Any]:
    return {
        "outcome": a.outcome.value,
        "remaining_quantity": a.remaining_quantity,
        "server_time_us": to_us(a.server_time),
        "claim_start_us": opt_us(a.claim_start),
        "coupon": None if a.coupon is None else coupon_to_dict(a.coupon),
    }


def allocation_to_json(a: AllocationResult) -> str:
    """`dumps(allocation_to_dict(a))`. A fresh grant (one answer recorded per coupon in a grant
    batch) is written from its pool's pre-encoded part and its own few fields: the same text."""
    c = a.coupon
    if (
        c is None
        or a.claim_start is not None
        or c.redeemed_order_id is not None
        or c.lock_expires_at is not None
    ):
        return dumps(allocation_to_dict(a))
    parts = _GRANT_PARTS.get(c.pool_id)
    if (
        parts is None
        or parts[0] is not c.terms
        or parts[1] is not c.target
        or parts[2] != c.currency_code
        or parts[3] != c.room_id
        or parts[4] != c.stackable
    ):
        parts = _grant_parts(c)
    # Keys in sorted order, as `dumps` writes them.
    return "".join(
        (
            '{"claim_start_us":null,"coupon":{"code":',
            _quote(c.code),
            ',"coupon_id":',
            _quote(c.coupon_id),
            parts[5],
            str(c.grant_sequence),
            parts[6],
            str(c.release_count),
            parts[7],
            str(to_us(c.valid_from)),
            ',"valid_until_us":',
            str(to_us(c.valid_until)),
            ',"viewer_id":',
            _quote(c.viewer_id),
            '},"outcome":',
            _quote(a.outcome.value),
            ',"remaining_quantity":',
            str(a.remaining_quantity),
            ',"server_time_us":',
            str(to_us(a.server_time)),
            "}",
        )
    )


_quote = encode_basestring_ascii  # a JSON string, as `dumps` writes it
_GRANT_PARTS: dict[str, tuple[CouponTerms, Target, str, str, bool, str, str, str]] = {}


def _grant_parts(c: Coupon) -> tuple[CouponTerms, Target, str, str, bool, str, str, str]:
    """What a fresh grant's recorded answer shares with its pool, as JSON text."""
    parts = (
        c.terms,
        c.target,
        c.currency_code,
        c.room_id,
        c.stackable,
        f',"currency_code":{_quote(c.currency_code)},"grant_seq":',
        f',"lock_expires_at_us":null,"pool_id":{_quote(c.pool_id)}'
        ',"redeemed_order_id":null,"release_count":',
        f',"room_id":{_quote(c.room_id)},"stackable":{"true" if c.stackable else "false"}'
        f',"target":{_quote(_shared_json(c.target))},"terms":{_quote(_shared_json(c.terms))}'
        ',"valid_from_us":',
    )
    _keep(_GRANT_PARTS, c.pool_id, parts)
    return parts


def allocation_from_json(text: str) -> AllocationResult:
    d = json.loads(text)
    return AllocationResult(
        outcome=Outcome(d["outcome"]),
        remaining_quantity=d["remaining_quantity"],
        server_time=from_us(d["server_time_us"]),
        claim_start=opt_dt(d["claim_start_us"]),
        coupon=None if d["coupon"] is None else coupon_from_dict(d["coupon"]),
    )


def redemption_to_row(r: Redemption) -> dict[str, Any]:
    """The redemptions table row of a redemption (without its fingerprint)."""
    return {
        "order_id": r.order_id,
        "coupon_id": r.coupon.coupon_id,
        "eligible_subtotal_minor": r.eligible_subtotal_minor,
        "discount_minor": r.discount_minor,
        "redeemed_at_us": to_us(r.redeemed_at),
        "released_at_us": opt_us(r.released_at),
        "state": r.state.value,
        "lock_expires_at_us": opt_us(r.lock_expires_at),
        "confirmed_at_us": opt_us(r.confirmed_at),
        "release_reason": None if r.release_reason is None else r.release_reason.value,
        "partially_refunded": r.partially_refunded,
        "refunded_at_us": opt_us(r.refunded_at),
    }


def redemption_from_row(r: Any, coupon: Coupon) -> Redemption:
    """A redemption from its row and its coupon."""
    reason = r["release_reason"]
    return Redemption(
        order_id=r["order_id"],
        coupon=coupon,
        eligible_subtotal_minor=r["eligible_subtotal_minor"],
        discount_minor=r["discount_minor"],
        redeemed_at=from_us(r["redeemed_at_us"]),
        released_at=opt_dt(r["released_at_us"]),
        state=RedemptionState(r["state"]),
        lock_expires_at=opt_dt(r["lock_expires_at_us"]),
        confirmed_at=opt_dt(r["confirmed_at_us"]),
        release_reason=None if reason is None else ReleaseReason(reason),
        partially_refunded=bool(r["partially_refunded"]),
        refunded_at=opt_dt(r["refunded_at_us"]),
    )
