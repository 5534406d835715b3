"""Protobuf messages to domain values and back; the only module that knows both."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Literal

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from generated.liveresource.v1 import events_pb2 as ev
from generated.liveresource.v1 import resource_allocation_service_pb2 as svc
from generated.liveresource.v1 import resources_pb2 as res
from server.domain import models as m
from server.domain.eligibility import Eligibility, Gap, Missing, PoolEligibility
from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.options import ConfigurationOptions
from server.service.configure import (
    AddStockOp,
    ConfigureOp,
    CreatePoolOp,
    PinPoolOp,
    ResendPoolOp,
    StopPoolOp,
    UnpinPoolOp,
    UpdateWindowOp,
)

_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_MAX_DURATION_SECONDS = 315576000000

_KIND_IN = {
    res.COUPON_KIND_FIXED_AMOUNT: m.CouponKind.FIXED_AMOUNT,
    res.COUPON_KIND_PERCENT_OFF: m.CouponKind.PERCENT_OFF,
}
_KIND_OUT = {v: k for k, v in _KIND_IN.items()}
_POOL_STATE = {
    m.PoolState.SCHEDULED: res.POOL_STATE_SCHEDULED,
    m.PoolState.OPEN: res.POOL_STATE_OPEN,
    m.PoolState.SOLD_OUT: res.POOL_STATE_SOLD_OUT,
    m.PoolState.CLOSED: res.POOL_STATE_CLOSED,
}
_COUPON_STATE = {
    m.CouponState.AVAILABLE: res.COUPON_STATE_AVAILABLE,
    m.CouponState.REDEEMED: res.COUPON_STATE_REDEEMED,
    m.CouponState.EXPIRED: res.COUPON_STATE_EXPIRED,
    m.CouponState.LOCKED: res.COUPON_STATE_LOCKED,
}
_REDEMPTION_STATE = {
    m.RedemptionState.LOCKED: res.REDEMPTION_STATE_LOCKED,
    m.RedemptionState.CONFIRMED: res.REDEMPTION_STATE_CONFIRMED,
    m.RedemptionState.RELEASED: res.REDEMPTION_STATE_RELEASED,
    m.RedemptionState.REFUNDED: res.REDEMPTION_STATE_REFUNDED,
}
_RELEASE_REASON = {
    m.ReleaseReason.ORDER_CANCELLED: res.RELEASE_REASON_ORDER_CANCELLED,
    m.ReleaseReason.PAYMENT_FAILED: res.RELEASE_REASON_PAYMENT_FAILED,
    m.ReleaseReason.LOCK_EXPIRED: res.RELEASE_REASON_LOCK_EXPIRED,
}
# What a caller may ask ReleaseCoupon for (unset: the order was cancelled).
_RELEASE_REASON_IN = {
    res.RELEASE_REASON_UNSPECIFIED: m.ReleaseReason.ORDER_CANCELLED,
    res.RELEASE_REASON_ORDER_CANCELLED: m.ReleaseReason.ORDER_CANCELLED,
    res.RELEASE_REASON_PAYMENT_FAILED: m.ReleaseReason.PAYMENT_FAILED,
}
_REFUND_KIND_IN = {
    svc.REFUND_KIND_FULL: m.RefundKind.FULL,
    svc.REFUND_KIND_PARTIAL: m.RefundKind.PARTIAL,
}
_OUTCOME = {
    m.Outcome.GRANTED: svc.ALLOCATION_OUTCOME_GRANTED,
    m.Outcome.SOLD_OUT: svc.ALLOCATION_OUTCOME_SOLD_OUT,
    m.Outcome.LIMIT_REACHED: svc.ALLOCATION_OUTCOME_LIMIT_REACHED,
    m.Outcome.NOT_OPEN_YET: svc.ALLOCATION_OUTCOME_NOT_OPEN_YET,
    m.Outcome.CLOSED: svc.ALLOCATION_OUTCOME_CLOSED,
    m.Outcome.NOT_ELIGIBLE: svc.ALLOCATION_OUTCOME_NOT_ELIGIBLE,
}
_REASON = {
    m.SnapshotReason.INITIAL: ev.SNAPSHOT_REASON_INITIAL,
    m.SnapshotReason.RESUME_TOO_OLD: ev.SNAPSHOT_REASON_RESUME_TOO_OLD,
    m.SnapshotReason.RESUME_UNKNOWN: ev.SNAPSHOT_REASON_RESUME_UNKNOWN,
    m.SnapshotReason.LAGGING: ev.SNAPSHOT_REASON_LAGGING,
}
_CLOSE = {
    m.CloseReason.STOPPED: ev.CLOSE_REASON_STOPPED,
    m.CloseReason.WINDOW_ENDED: ev.CLOSE_REASON_WINDOW_ENDED,
}


def fingerprint(request: Message) -> str:
    """A stable hash of a request's parameters: without its request_id, and without the
    output-only fields a client may echo back (they are ignored, so they must not make a
    retry look like another request)."""
    copy = type(request).FromString(request.SerializeToString())
    for name in ("request_id",):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    if isinstance(copy, svc.RegisterRoomRequest):
        copy.room.ClearField("create_time")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


# --- wire to domain ---------------------------------------------------------------------


def timestamp_in(
    ts: timestamp_pb2.Timestamp, field: str, out: list[FieldViolation]
) -> datetime | None:
    """A Timestamp as an aware UTC datetime (microseconds), or a violation."""
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
        out.append(FieldViolation(field, "is not a valid timestamp"))
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=ts.seconds, microseconds=ts.nanos // 1000
    )


def duration_in(
    d: duration_pb2.Duration, field: str, out: list[FieldViolation]
) -> timedelta | None:
    """A Duration as a timedelta, or a violation."""
    if not (
        abs(d.seconds) <= _MAX_DURATION_SECONDS
        and abs(d.nanos) < 1_000_000_000
        and (d.seconds == 0 or d.nanos == 0 or (d.seconds > 0) == (d.nanos > 0))
    ):
        out.append(FieldViolation(field, "is not a valid duration"))
        return None
    return timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


def _optional_time(
    message: Message, name: str, prefix: str, out: list[FieldViolation]
) -> datetime | None:
    """An optional Timestamp field: None when unset, else its datetime (or a violation)."""
    if not message.HasField(name):
        return None
    return timestamp_in(getattr(message, name), f"{prefix}.{name}", out)


def goods_in(g: res.Goods, shop_id: str = "") -> m.Goods:
    return m.Goods(goods_id=g.goods_id, shop_id=g.shop_id or shop_id, title=g.title)


def room_in(r: res.Room) -> m.Room:
    """The room of a RegisterRoom request (create_time ignored)."""
    shops = tuple(
        m.Shop(s.shop_id, s.name, tuple(goods_in(g, s.shop_id) for g in s.goods))
        for s in r.linked_shops
    )
    return m.Room(
        room_id=r.room_id,
        streamer_id=r.streamer_id,
        currency_code=r.currency_code,
        featured_goods=tuple(goods_in(g) for g in r.featured_goods),
        linked_shops=shops,
        created_at=datetime.now(UTC),
    )


def _terms_in(t: res.CouponTerms, field: str, out: list[FieldViolation]) -> m.CouponTerms:
    kind = _KIND_IN.get(t.kind)
    if kind is None:
        out.append(FieldViolation(f"{field}.kind", "is required: FIXED_AMOUNT or PERCENT_OFF"))
        kind = m.CouponKind.FIXED_AMOUNT
    return m.CouponTerms(
        kind=kind,
        amount_off_minor=t.amount_off_minor,
        percent_off=t.percent_off,
        max_discount_minor=t.max_discount_minor,
        min_spend_minor=t.min_spend_minor,
    )


def _validity_in(v: res.CouponValidity, field: str, out: list[FieldViolation]) -> m.Validity:
    which = v.WhichOneof("validity")
    if which == "valid_until":
        return m.Validity(valid_until=timestamp_in(v.valid_until, f"{field}.valid_until", out))
    if which == "valid_for":
        return m.Validity(valid_for=duration_in(v.valid_for, f"{field}.valid_for", out))
    out.append(FieldViolation(field, "is required: set valid_until or valid_for"))
    return m.Validity(valid_for=timedelta(0))


def configure_op_in(request: svc.ConfigureResourcesRequest) -> ConfigureOp:
    """The operation of a ConfigureResources request; raises InvalidArgument if unreadable."""
    out: list[FieldViolation] = []
    which = request.WhichOneof("operation")
    op: ConfigureOp
    if which == "create_pool":
        c = request.create_pool
        f = "create_pool"
        start = _optional_time(c, "claim_start_time", f, out)
        end = _optional_time(c, "claim_end_time", f, out)
        spec = m.PoolSpec(
            title=c.title,
            terms=_terms_in(c.terms, f"{f}.terms", out),
            target=m.Target(tuple(c.target.goods_ids), tuple(c.target.shop_ids)),
            total_quantity=c.total_quantity,
            per_viewer_limit=c.per_viewer_limit,
            claim_start=start,
            claim_end=end,
            validity=_validity_in(c.validity, f"{f}.validity", out),
            stackable=c.stackable,
            claim_duration=duration_in(c.claim_duration, f"{f}.claim_duration", out)
            if c.HasField("claim_duration")
            else None,
            eligibility=eligibility_in(c.eligibility, f"{f}.eligibility", out),
        )
        op = CreatePoolOp(spec)
    elif which == "add_stock":
        a = request.add_stock
        op = AddStockOp(a.pool_id, a.expected_version, a.quantity)
    elif which == "update_claim_window":
        w = request.update_claim_window
        f = "update_claim_window"
        start = _optional_time(w, "claim_start_time", f, out)
        end = _optional_time(w, "claim_end_time", f, out)
        op = UpdateWindowOp(w.pool_id, w.expected_version, start, end)
    elif which == "stop_pool":
        op = StopPoolOp(request.stop_pool.pool_id, request.stop_pool.expected_version)
    elif which == "pin_pool":
        op = PinPoolOp(request.pin_pool.pool_id, request.pin_pool.expected_version)
    elif which == "unpin_pool":
        op = UnpinPoolOp(request.unpin_pool.pool_id, request.unpin_pool.expected_version)
    elif which == "resend_pool":
        r = request.resend_pool
        end = _optional_time(r, "claim_end_time", "resend_pool", out)
        op = ResendPoolOp(r.pool_id, r.expected_version, end)
    else:
        out.append(
            FieldViolation(
                "operation",
                "is required: create_pool, add_stock, update_claim_window, stop_pool, "
                "pin_pool, unpin_pool or resend_pool",
            )
        )
    if out:
        raise InvalidArgument(out)
    return op


def order_lines_in(lines: list[res.OrderLine]) -> list[m.OrderLine]:
    return [m.OrderLine(x.goods_id, x.shop_id, x.unit_price_minor, x.quantity) for x in lines]


def release_reason_in(value: int) -> m.ReleaseReason | None:
    """The reason a ReleaseCoupon caller gave; None if it is not one a caller may give."""
    found: m.ReleaseReason | None = _RELEASE_REASON_IN.get(value)  # type: ignore[call-overload]
    return found


def refund_kind_in(value: int) -> m.RefundKind | None:
    """The refund kind asked for; None if unset or unknown."""
    found: m.RefundKind | None = _REFUND_KIND_IN.get(value)  # type: ignore[call-overload]
    return found


# --- domain to wire ---------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp (plain arithmetic: FromDatetime is slow per call)."""
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _goods_out(g: m.Goods) -> res.Goods:
    return res.Goods(goods_id=g.goods_id, shop_id=g.shop_id, title=g.title)


def _shop_out(s: m.Shop) -> res.Shop:
    return res.Shop(shop_id=s.shop_id, name=s.name, goods=[_goods_out(g) for g in s.goods])


def room_out(r: m.Room) -> res.Room:
    return res.Room(
        room_id=r.room_id,
        streamer_id=r.streamer_id,
        currency_code=r.currency_code,
        featured_goods=[_goods_out(g) for g in r.featured_goods],
        linked_shops=[_shop_out(s) for s in r.linked_shops],
        create_time=ts(r.created_at),
    )


def terms_out(t: m.CouponTerms, currency_code: str) -> res.CouponTerms:
    return res.CouponTerms(
        kind=_KIND_OUT[t.kind],
        amount_off_minor=t.amount_off_minor,
        percent_off=t.percent_off,
        max_discount_minor=t.max_discount_minor,
        min_spend_minor=t.min_spend_minor,
        currency_code=currency_code,
    )


def target_out(t: m.Target) -> res.TargetGoods:
    return res.TargetGoods(goods_ids=list(t.goods_ids), shop_ids=list(t.shop_ids))


def validity_out(v: m.Validity) -> res.CouponValidity:
    if v.valid_for is not None:
        d = duration_pb2.Duration()
        d.FromTimedelta(v.valid_for)
        return res.CouponValidity(valid_for=d)
    assert v.valid_until is not None
    return res.CouponValidity(valid_until=ts(v.valid_until))


def pool_out(p: m.Pool, at: datetime) -> res.Pool:
    """A pool, with its state as of `at`."""
    out = res.Pool(
        pool_id=p.pool_id,
        room_id=p.room_id,
        title=p.title,
        terms=terms_out(p.terms, p.currency_code),
        target=target_out(p.target),
        total_quantity=p.total_quantity,
        remaining_quantity=p.remaining_quantity,
        granted_quantity=p.granted_quantity,
        per_viewer_limit=p.per_viewer_limit,
        claim_start_time=ts(p.claim_start),
        validity=validity_out(p.validity),
        state=_POOL_STATE[p.state_at(at)],
        version=p.version,
        withdrawn_quantity=p.withdrawn_quantity,
        create_time=ts(p.created_at),
        update_time=ts(p.updated_at),
        stackable=p.stackable,
        pinned=p.pinned,
        round=p.round,
    )
    if p.claim_duration is not None:
        out.claim_duration.CopyFrom(_dur(p.claim_duration))
    if p.eligibility.restricts:
        out.eligibility.CopyFrom(eligibility_out(p.eligibility))
    if p.claim_end is not None:
        out.claim_end_time.CopyFrom(ts(p.claim_end))
    return out


def coupon_out(c: m.Coupon, at: datetime) -> res.Coupon:
    """A coupon, with its state as of `at`."""
    return res.Coupon(
        coupon_id=c.coupon_id,
        code=c.code,
        pool_id=c.pool_id,
        room_id=c.room_id,
        viewer_id=c.viewer_id,
        terms=terms_out(c.terms, c.currency_code),
        target=target_out(c.target),
        valid_from=ts(c.valid_from),
        valid_until=ts(c.valid_until),
        state=_COUPON_STATE[c.state_at(at)],
        order_id=c.order_at(at) or "",
        grant_sequence=c.grant_sequence,
    )


def redemption_out(r: m.Redemption, at: datetime) -> res.Redemption:
    """A redemption as of `at` (a lock past its expiry shows as released)."""
    r = r.as_of(at)
    out = res.Redemption(
        order_id=r.order_id,
        coupon=coupon_out(r.coupon, at),
        eligible_subtotal_minor=r.eligible_subtotal_minor,
        discount_minor=r.discount_minor,
        redeem_time=ts(r.redeemed_at),
        released=r.released_at is not None,
        state=_REDEMPTION_STATE[r.state],
        partially_refunded=r.partially_refunded,
    )
    if r.release_reason is not None:
        out.release_reason = _RELEASE_REASON[r.release_reason]
    for name, value in (
        ("release_time", r.released_at),
        ("lock_expire_time", r.lock_expires_at),
        ("confirm_time", r.confirmed_at),
        ("refund_time", r.refunded_at),
    ):
        if value is not None:
            getattr(out, name).CopyFrom(ts(value))
    return out


def grant_out(c: m.Coupon, at: datetime) -> res.PoolGrant:
    """A coupon as a line of its pool's winner list."""
    return res.PoolGrant(
        sequence=c.grant_sequence,
        grant_time=ts(c.valid_from),
        viewer_id=c.viewer_id,
        coupon_id=c.coupon_id,
        state=_COUPON_STATE[c.state_at(at)],
    )


def stats_out(s: m.PoolStats) -> res.PoolStats:
    return res.PoolStats(
        pool_id=s.pool_id,
        total_quantity=s.total_quantity,
        remaining_quantity=s.remaining_quantity,
        granted_quantity=s.granted_quantity,
        held_quantity=s.held_quantity,
        locked_quantity=s.locked_quantity,
        redeemed_quantity=s.redeemed_quantity,
        released_quantity=s.released_quantity,
        expired_quantity=s.expired_quantity,
        withdrawn_quantity=s.withdrawn_quantity,
        server_time=ts(s.server_time),
    )


def allocation_out(a: m.AllocationResult) -> svc.AllocateResponse:
    out = svc.AllocateResponse(
        outcome=_OUTCOME[a.outcome],
        remaining_quantity=a.remaining_quantity,
        server_time=ts(a.server_time),
    )
    if a.coupon is not None:
        out.coupon.CopyFrom(coupon_out(a.coupon, a.server_time))
    if a.claim_start is not None:
        out.claim_start_time.CopyFrom(ts(a.claim_start))
    if a.missing:
        out.missing.extend(missing_out(x) for x in a.missing)
    return out


_SERVER_TIME_TAG = b"\x2a"  # AllocateResponse.server_time: field 5, length-delimited
_REFUSAL_PREFIXES = 1024


class AllocationEncoder:
    """Wire bytes of Allocate answers. A refusal (no coupon, nothing missing) is the same
    message for every caller of a pool state but for `server_time`, its last field:
    everything before it is encoded once per (outcome, remaining, claim start) and the time
    appended, giving the bytes `allocation_out(a).SerializeToString()` gives. The time is
    encoded by `timestamp_field`, without a message: a sold-out answer is most of a
    stampede's calls, and building two protobuf messages per answer cost ~7 µs of a loaded
    server's time."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[m.Outcome, int, datetime | None], bytes] = {}
        self._coupons = CouponEncoder()

    def encode(self, a: m.AllocationResult) -> bytes:
        if a.missing or a.claim_start is not None:  # rare: encoded in full
            return allocation_out(a).SerializeToString()
        if a.coupon is not None:  # a grant, or its replay
            coupon = self._coupons.encode(a.coupon, a.server_time)
            return b"".join(
                (
                    _OUTCOME_FIELD[a.outcome],
                    b"\x12",
                    _varint(len(coupon)),
                    coupon,
                    b"\x18" + _varint(a.remaining_quantity) if a.remaining_quantity else b"",
                    _SERVER_TIME_TAG,
                    timestamp_field(a.server_time),
                )
            )
        key = (a.outcome, a.remaining_quantity, a.claim_start)
        prefix = self._prefixes.get(key)
        if prefix is None:
            head = svc.AllocateResponse(
                outcome=_OUTCOME[a.outcome], remaining_quantity=a.remaining_quantity
            )
            if a.claim_start is not None:
                head.claim_start_time.CopyFrom(ts(a.claim_start))
            prefix = head.SerializeToString() + _SERVER_TIME_TAG
            if len(self._prefixes) >= _REFUSAL_PREFIXES:
                self._prefixes.clear()
            self._prefixes[key] = prefix
        return prefix + timestamp_field(a.server_time)


def _varint(value: int) -> bytes:
    """A non-negative int as a protobuf varint. Up to four bytes without a loop: a grant's
    answer writes about a dozen (lengths, counts, a timestamp's nanoseconds)."""
    if value < 0x80:
        if value < 0:
            raise ValueError(f"a varint here is never negative: {value}")
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes(
            (value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80, value >> 21)
        )
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


_OUTCOME_FIELD = {o: b"\x08" + _varint(v) for o, v in _OUTCOME.items()}
_COUPON_PARTS = 1024
_COUPON_TIMES = 256


class CouponEncoder:
    """Wire bytes of a coupon: the bytes `coupon_out(c, at).SerializeToString()` gives,
    written field by field. What it shares with its pool (pool and room ids, terms, target
    with the goods list: the bulk of it) is encoded once per pool, and the validity times,
    which a grant batch's coupons share, once per time."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[m.CouponTerms, m.Target, str, str, bytes, bytes]] = {}
        self._times: dict[datetime, bytes] = {}

    def encode(self, c: m.Coupon, at: datetime) -> bytes:
        parts = self._parts.get(c.pool_id)
        if (
            parts is None
            or (parts[0] is not c.terms and parts[0] != c.terms)
            or (parts[1] is not c.target and parts[1] != c.target)
            or parts[2] != c.currency_code
            or parts[3] != c.room_id
        ):
            parts = self._pool_parts(c)
        times = self._times
        valid_from = times.get(c.valid_from)
        if valid_from is None:
            valid_from = self._time(c.valid_from)
        valid_until = times.get(c.valid_until)
        if valid_until is None:
            valid_until = self._time(c.valid_until)
        state = _COUPON_STATE[c.state_at(at)]
        order_id = c.order_at(at)
        return b"".join(
            (
                _string_field(b"\x0a", c.coupon_id),
                _string_field(b"\x12", c.code),
                parts[4],  # pool and room ids
                _string_field(b"\x2a", c.viewer_id),
                parts[5],  # terms and target
                b"\x42",
                valid_from,
                b"\x4a",
                valid_until,
                b"\x50" + _varint(state) if state else b"",
                _string_field(b"\x5a", order_id) if order_id else b"",
                b"\x60" + _varint(c.grant_sequence) if c.grant_sequence else b"",
            )
        )

    def _pool_parts(self, c: m.Coupon) -> tuple[m.CouponTerms, m.Target, str, str, bytes, bytes]:
        terms = terms_out(c.terms, c.currency_code).SerializeToString()
        target = target_out(c.target).SerializeToString()
        shared = b"".join(
            (b"\x32", _varint(len(terms)), terms, b"\x3a", _varint(len(target)), target)
        )
        ids = _string_field(b"\x1a", c.pool_id) + _string_field(b"\x22", c.room_id)
        parts = (c.terms, c.target, c.currency_code, c.room_id, ids, shared)
        if len(self._parts) >= _COUPON_PARTS:
            self._parts.clear()
        self._parts[c.pool_id] = parts
        return parts

    def _time(self, value: datetime) -> bytes:
        """A validity time's length and body, without its tag (valid_from and valid_until,
        fields 8 and 9, may be the same time)."""
        body = timestamp_field(value)
        if len(self._times) >= _COUPON_TIMES:
            self._times.clear()
        self._times[value] = body
        return body


def _string_field(tag: bytes, value: str) -> bytes:
    """A proto3 string field (omitted when empty)."""
    if not value:
        return b""
    data = value.encode()
    return tag + _varint(len(data)) + data


_SECONDS: list[tuple[int, bytes]] = [(-1, b"")]
"""The last whole second encoded (a one-entry cache: answers come in bursts)."""


def timestamp_field(value: datetime) -> bytes:
    """An aware datetime as the length and body of an embedded Timestamp message: the bytes
    that `ts(value).SerializeToString()`, length-prefixed, gives (zero fields omitted)."""
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if seconds < 0:  # before 1970: a negative varint; never the server's own clock
        body = ts(value).SerializeToString()
        return len(body).to_bytes(1, "little") + body
    cached_seconds, head = _SECONDS[0]
    if seconds != cached_seconds:
        head = b"\x08" + _varint(seconds) if seconds > 0 else b""
        _SECONDS[0] = (seconds, head)
    micros = delta.microseconds
    if not micros:
        return len(head).to_bytes(1, "little") + head
    nanos = micros * 1000  # 1,000 to 999,999,000: a varint of 2 to 5 bytes
    if nanos >= 1 << 28:
        tail = bytes(
            (
                0x10,
                nanos & 0x7F | 0x80,
                nanos >> 7 & 0x7F | 0x80,
                nanos >> 14 & 0x7F | 0x80,
                nanos >> 21 & 0x7F | 0x80,
                nanos >> 28,
            )
        )
    else:
        tail = b"\x10" + _varint(nanos)
    return (len(head) + len(tail)).to_bytes(1, "little") + head + tail


_SNAPSHOT_TAG = b"\x0a"  # StreamAllocationInfoResponse.snapshot: field 1
_SNAPSHOT_TIME_TAG = b"\x22"  # RoomSnapshot.server_time: field 4
_SNAPSHOT_PARTS = 64


class SnapshotEncoder:
    """Wire bytes of snapshot messages. A crowd joining a room gets the same snapshot but
    for `server_time` (and the pools' states at it): everything else is encoded once per
    (room, sequence, reason, pools and their states) and the time spliced in, giving the
    bytes `subscription_out(item).SerializeToString()` gives, without building a message
    per stream."""

    def __init__(self) -> None:
        self._parts: dict[tuple[object, ...], tuple[bytes, bytes]] = {}

    def encode(self, item: m.SnapshotMessage) -> bytes:
        if item.eligibility:  # this viewer's own: encoded in full
            return subscription_out(item).SerializeToString()
        snap = item.snapshot
        now = snap.server_time
        key = (
            snap.room_id,
            snap.sequence,
            item.reason,
            tuple((p, p.state_at(now)) for p in snap.pools),
        )
        parts = self._parts.get(key)
        if parts is None:
            head = ev.RoomSnapshot(
                room_id=snap.room_id,
                pools=[pool_out(p, now) for p in snap.pools],
                sequence=snap.sequence,
            ).SerializeToString()
            tail = ev.RoomSnapshot(reason=_REASON[item.reason]).SerializeToString()
            parts = (head, tail)
            if len(self._parts) >= _SNAPSHOT_PARTS:
                self._parts.clear()
            self._parts[key] = parts
        stamp = ts(now).SerializeToString()
        inner = b"".join(
            (parts[0], _SNAPSHOT_TIME_TAG, len(stamp).to_bytes(1, "little"), stamp, parts[1])
        )
        return b"".join((_SNAPSHOT_TAG, _varint(len(inner)), inner))


def _range(bounds: tuple[int, int]) -> res.Int64Range:
    return res.Int64Range(min=bounds[0], max=bounds[1])


def _dur(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def options_out(o: ConfigurationOptions) -> res.ConfigurationOptions:
    lim = o.limits
    return res.ConfigurationOptions(
        room_id=o.room.room_id,
        currency_code=o.room.currency_code,
        goods=[
            res.TargetableGoods(
                goods=_goods_out(t.goods), featured=t.featured, from_linked_shop=t.from_linked_shop
            )
            for t in o.goods
        ],
        shops=[_shop_out(s) for s in o.shops],
        coupon_kinds=[_KIND_OUT[k] for k in lim.coupon_kinds],
        quantity=_range(lim.quantity),
        stock_increment=_range(lim.stock_increment),
        per_viewer_limit=_range(lim.per_viewer_limit),
        amount_off_minor=_range(lim.amount_off_minor),
        percent_off=_range(lim.percent_off),
        max_claim_start_delay=_dur(lim.max_claim_start_delay),
        min_claim_window=_dur(lim.min_claim_window),
        max_claim_window=_dur(lim.max_claim_window),
        min_validity=_dur(lim.min_validity),
        max_validity=_dur(lim.max_validity),
    )


def event_out(e: m.RoomEvent) -> ev.RoomEvent:
    """A room event; the pool it carries is shown as of the event's time."""
    p = e.pool
    out = ev.RoomEvent(
        sequence=e.sequence,
        event_time=ts(e.event_time),
        pool_id=p.pool_id,
        previous_lifecycle_sequence=e.previous_lifecycle,
    )
    if e.kind is m.EventKind.POOL_SCHEDULED:
        out.pool_scheduled.pool.CopyFrom(pool_out(p, e.event_time))
    elif e.kind is m.EventKind.POOL_OPENED:
        out.pool_opened.pool.CopyFrom(pool_out(p, e.event_time))
    elif e.kind is m.EventKind.POOL_CHANGED:
        out.pool_changed.pool.CopyFrom(pool_out(p, e.event_time))
    elif e.kind is m.EventKind.STOCK_CHANGED:
        out.stock_changed.remaining_quantity = p.remaining_quantity
        out.stock_changed.total_quantity = p.total_quantity
    elif e.kind is m.EventKind.POOL_SOLD_OUT:
        out.pool_sold_out.total_quantity = p.total_quantity
    elif e.kind is m.EventKind.POOL_PINNED:
        out.pool_pinned.pool.CopyFrom(pool_out(p, e.event_time))
    elif e.kind is m.EventKind.POOL_UNPINNED:
        out.pool_unpinned.pool.CopyFrom(pool_out(p, e.event_time))
    elif e.kind is m.EventKind.POOL_RESENT:
        out.pool_resent.pool.CopyFrom(pool_out(p, e.event_time))
    else:
        out.pool_closed.reason = _CLOSE[p.close_reason or m.CloseReason.WINDOW_ENDED]
        out.pool_closed.withdrawn_quantity = p.withdrawn_quantity
    return out


def subscription_out(item: m.SubscriptionItem) -> svc.StreamAllocationInfoResponse:
    if isinstance(item, m.RoomEvent):
        return svc.StreamAllocationInfoResponse(event=event_out(item))
    if isinstance(item, m.Heartbeat):
        return svc.StreamAllocationInfoResponse(
            heartbeat=ev.Heartbeat(server_time=ts(item.server_time), sequence=item.sequence)
        )
    if isinstance(item, m.EligibilityUpdate):
        return svc.StreamAllocationInfoResponse(
            eligibility=ev.EligibilityUpdate(
                pools=[pool_eligibility_out(e) for e in item.pools],
                server_time=ts(item.server_time),
            )
        )
    snap = item.snapshot
    return svc.StreamAllocationInfoResponse(
        snapshot=ev.RoomSnapshot(
            room_id=snap.room_id,
            pools=[pool_out(p, snap.server_time) for p in snap.pools],
            sequence=snap.sequence,
            server_time=ts(snap.server_time),
            reason=_REASON[item.reason],
            viewer_eligibility=[pool_eligibility_out(e) for e in item.eligibility],
        )
    )


_GAP = {
    Gap.NOT_FOLLOWER: res.ELIGIBILITY_GAP_NOT_FOLLOWER,
    Gap.FOLLOWED_TOO_RECENTLY: res.ELIGIBILITY_GAP_FOLLOWED_TOO_RECENTLY,
    Gap.NOT_NEW_FOLLOWER: res.ELIGIBILITY_GAP_NOT_NEW_FOLLOWER,
    Gap.NOT_NEW_BUYER: res.ELIGIBILITY_GAP_NOT_NEW_BUYER,
    Gap.WATCH_TIME: res.ELIGIBILITY_GAP_WATCH_TIME,
}


def missing_out(x: Missing) -> res.MissingRequirement:
    out = res.MissingRequirement(gap=_GAP[x.gap], description=x.description)
    if x.remaining is not None:
        out.remaining.CopyFrom(_dur(x.remaining))
    return out


def pool_eligibility_out(e: PoolEligibility) -> res.PoolEligibility:
    return res.PoolEligibility(
        pool_id=e.pool_id, eligible=e.eligible, missing=[missing_out(x) for x in e.missing]
    )


def eligibility_out(e: Eligibility) -> res.Eligibility:
    out = res.Eligibility(followers_only=e.followers_only, new_buyers_only=e.new_buyers_only)
    for name in ("min_follow_age", "max_follow_age", "min_watch_time"):
        value = getattr(e, name)
        if value is not None:
            getattr(out, name).CopyFrom(_dur(value))
    return out


def eligibility_in(e: res.Eligibility, field: str, out: list[FieldViolation]) -> Eligibility:
    """A CreatePool's eligibility rule (durations checked for form here, range in the domain)."""

    def optional(
        name: Literal["min_follow_age", "max_follow_age", "min_watch_time"],
    ) -> timedelta | None:
        if not e.HasField(name):
            return None
        return duration_in(getattr(e, name), f"{field}.{name}", out)

    return Eligibility(
        followers_only=e.followers_only,
        min_follow_age=optional("min_follow_age"),
        max_follow_age=optional("max_follow_age"),
        new_buyers_only=e.new_buyers_only,
        min_watch_time=optional("min_watch_time"),
    )
