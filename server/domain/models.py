"""Domain records: rooms, pools, coupons, redemptions and room events (immutable values)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

from server.domain.eligibility import Eligibility, Missing, PoolEligibility, ViewerFacts


class Role(enum.StrEnum):
    """Who a caller is, as stated by its verified token."""

    PLATFORM = "platform"
    STREAMER = "streamer"
    VIEWER = "viewer"
    ORDER_SERVICE = "order_service"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    subject: str
    role: Role
    facts: ViewerFacts = field(default_factory=ViewerFacts, compare=False)
    """What the platform vouches for about a viewer (from signed token claims)."""


class CouponKind(enum.StrEnum):
    """The kinds of discount a coupon can carry."""

    FIXED_AMOUNT = "fixed_amount"
    PERCENT_OFF = "percent_off"


class PoolState(enum.StrEnum):
    """Lifecycle of a pool as viewers see it."""

    SCHEDULED = "scheduled"
    OPEN = "open"
    SOLD_OUT = "sold_out"
    CLOSED = "closed"


class CloseReason(enum.StrEnum):
    """Why a pool closed."""

    STOPPED = "stopped"
    WINDOW_ENDED = "window_ended"


class Outcome(enum.StrEnum):
    """The answer to a grab."""

    GRANTED = "granted"
    SOLD_OUT = "sold_out"
    LIMIT_REACHED = "limit_reached"
    NOT_OPEN_YET = "not_open_yet"
    CLOSED = "closed"
    NOT_ELIGIBLE = "not_eligible"


class CouponState(enum.StrEnum):
    """Where a granted coupon stands."""

    AVAILABLE = "available"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    LOCKED = "locked"


class RedemptionState(enum.StrEnum):
    """Where a coupon stands on one order."""

    LOCKED = "locked"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    REFUNDED = "refunded"


class ReleaseReason(enum.StrEnum):
    """Why a coupon went back to its viewer from an order."""

    ORDER_CANCELLED = "order_cancelled"
    PAYMENT_FAILED = "payment_failed"
    LOCK_EXPIRED = "lock_expired"


class RefundKind(enum.StrEnum):
    """How much of an order was refunded."""

    FULL = "full"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class Goods:
    """A sellable item and the shop selling it."""

    goods_id: str
    shop_id: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Shop:
    """A shop linked to a room, with its goods."""

    shop_id: str
    name: str = ""
    goods: tuple[Goods, ...] = ()


@dataclass(frozen=True, slots=True)
class Room:
    """A live room: owner, currency, featured goods and linked shops."""

    room_id: str
    streamer_id: str
    currency_code: str
    featured_goods: tuple[Goods, ...]
    linked_shops: tuple[Shop, ...]
    created_at: datetime

    def goods_by_id(self) -> dict[str, Goods]:
        """Every goods a pool of this room may target, featured ones first."""
        found: dict[str, Goods] = {g.goods_id: g for g in self.featured_goods}
        for shop in self.linked_shops:
            for g in shop.goods:
                found.setdefault(g.goods_id, g)
        return found


@dataclass(frozen=True, slots=True)
class CouponTerms:
    """What a coupon is worth; amounts in minor units of the room's currency."""

    kind: CouponKind
    amount_off_minor: int = 0
    percent_off: int = 0
    max_discount_minor: int = 0
    min_spend_minor: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    """The goods a coupon applies to: listed goods plus every goods of listed shops."""

    goods_ids: tuple[str, ...] = ()
    shop_ids: tuple[str, ...] = ()

    def covers(self, goods_id: str, shop_id: str) -> bool:
        """Whether an order line for this goods of this shop is eligible."""
        return goods_id in self.goods_ids or shop_id in self.shop_ids


@dataclass(frozen=True, slots=True)
class Validity:
    """A coupon's validity: an absolute end, or a duration from its grant (exactly one)."""

    valid_until: datetime | None = None
    valid_for: timedelta | None = None

    def end_for_grant(self, granted_at: datetime) -> datetime:
        """When a coupon granted at `granted_at` stops being usable."""
        if self.valid_for is not None:
            return granted_at + self.valid_for
        assert self.valid_until is not None
        return self.valid_until


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What a streamer asks for when creating a pool."""

    title: str
    terms: CouponTerms
    target: Target
    total_quantity: int
    per_viewer_limit: int
    claim_start: datetime | None
    claim_end: datetime | None
    validity: Validity
    stackable: bool = False
    claim_duration: timedelta | None = None
    """Claimable for this long after each opening (the push); not with claim_end."""
    eligibility: Eligibility = field(default_factory=Eligibility)
    """Who may grab."""


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool of coupons in a room. granted + remaining == total at all times."""

    pool_id: str
    room_id: str
    title: str
    terms: CouponTerms
    target: Target
    total_quantity: int
    remaining_quantity: int
    granted_quantity: int
    withdrawn_quantity: int
    per_viewer_limit: int
    claim_start: datetime
    claim_end: datetime | None
    validity: Validity
    currency_code: str
    version: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    close_reason: CloseReason | None = None
    # The last state announced to the room's subscribers; lags state_at() until the
    # lifecycle ticker (or the next write to the pool) announces the transition.
    announced_state: PoolState = PoolState.SCHEDULED
    stackable: bool = False
    """Whether its coupons combine with other coupons of the room on one order."""
    pinned: bool = False
    """Highlighted in the apps; at most one pool of a room."""
    round: int = 1
    """1 for the first claim window, +1 per resend."""
    claim_duration: timedelta | None = None
    """Claimable for this long after each opening: claim_end is opening + this."""
    eligibility: Eligibility = field(default_factory=Eligibility)
    """Who may grab; immutable."""

    def state_at(self, now: datetime) -> PoolState:
        """The pool's state at `now`, derived from its window, stock and closing."""
        if self.closed_at is not None or (self.claim_end is not None and now >= self.claim_end):
            return PoolState.CLOSED
        if now < self.claim_start:
            return PoolState.SCHEDULED
        if self.remaining_quantity <= 0:
            return PoolState.SOLD_OUT
        return PoolState.OPEN

    def with_changes(self, **changes: object) -> Pool:
        """A copy with some fields replaced (as `dataclasses.replace`, at half its cost: a
        grant makes one per coupon)."""
        values = list(_POOL_VALUES(self))
        for name, value in changes.items():
            index = _POOL_INDEX.get(name)
            if index is None:
                raise TypeError(f"Pool has no field {name!r}")
            values[index] = value
        return Pool(*values)


_POOL_FIELDS = tuple(f.name for f in fields(Pool))
if any(not f.init or f.kw_only for f in fields(Pool)):  # `with_changes` passes them by position
    raise TypeError("every Pool field must be a positional __init__ parameter")
_POOL_INDEX = {name: i for i, name in enumerate(_POOL_FIELDS)}
_POOL_VALUES = attrgetter(*_POOL_FIELDS)


@dataclass(frozen=True, slots=True)
class Coupon:
    """A coupon granted to a viewer."""

    coupon_id: str
    code: str
    pool_id: str
    room_id: str
    viewer_id: str
    terms: CouponTerms
    target: Target
    currency_code: str
    valid_from: datetime
    valid_until: datetime
    redeemed_order_id: str | None = None
    """The order it is locked for or used on (a lock past lock_expires_at no longer holds)."""
    lock_expires_at: datetime | None = None
    """Set while locked for an order whose payment is pending; None once confirmed."""
    release_count: int = 0
    """How many times it went back to its viewer from an order."""
    grant_sequence: int = 0
    """Its place in the pool's grants: 1 for the first, +1 per grant."""
    stackable: bool = False
    """Whether its pool's coupons combine with the room's other coupons on one order."""

    def order_at(self, now: datetime) -> str | None:
        """The order holding it at `now`: a confirmed one, or a lock not yet expired."""
        if self.redeemed_order_id is None:
            return None
        if self.lock_expires_at is not None and now >= self.lock_expires_at:
            return None
        return self.redeemed_order_id

    def state_at(self, now: datetime) -> CouponState:
        """LOCKED or REDEEMED while on an order, else AVAILABLE until valid_until, then
        EXPIRED."""
        if self.order_at(now) is not None:
            return CouponState.REDEEMED if self.lock_expires_at is None else CouponState.LOCKED
        if now >= self.valid_until:
            return CouponState.EXPIRED
        return CouponState.AVAILABLE


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of an order to redeem a coupon on."""

    goods_id: str
    shop_id: str
    unit_price_minor: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Redemption:
    """A coupon on an order: locked at checkout, then confirmed, released or refunded."""

    order_id: str
    coupon: Coupon
    eligible_subtotal_minor: int
    discount_minor: int
    redeemed_at: datetime
    """When it was locked (or redeemed in one step)."""
    released_at: datetime | None = None
    state: RedemptionState = RedemptionState.CONFIRMED
    lock_expires_at: datetime | None = None
    confirmed_at: datetime | None = None
    release_reason: ReleaseReason | None = None
    partially_refunded: bool = False
    refunded_at: datetime | None = None

    def as_of(self, now: datetime) -> Redemption:
        """The redemption at `now`: a lock past its expiry is a release (LOCK_EXPIRED) at
        that instant, whether or not the store has written it down yet."""
        expires = self.lock_expires_at
        if self.state is not RedemptionState.LOCKED or expires is None or now < expires:
            return self
        coupon = self.coupon
        if coupon.redeemed_order_id == self.order_id:  # not yet locked by another order
            coupon = replace(
                coupon,
                redeemed_order_id=None,
                lock_expires_at=None,
                release_count=coupon.release_count + 1,
            )
        return replace(
            self,
            coupon=coupon,
            state=RedemptionState.RELEASED,
            released_at=expires,
            release_reason=ReleaseReason.LOCK_EXPIRED,
        )

    @property
    def live(self) -> bool:
        """Holding its coupon: locked or confirmed (call on `as_of(now)`)."""
        return self.state in (RedemptionState.LOCKED, RedemptionState.CONFIRMED)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A pool's live counts: remaining + held + locked + redeemed + released + expired ==
    total."""

    pool_id: str
    total_quantity: int
    remaining_quantity: int
    held_quantity: int
    locked_quantity: int
    redeemed_quantity: int
    released_quantity: int
    expired_quantity: int
    withdrawn_quantity: int
    server_time: datetime

    @property
    def granted_quantity(self) -> int:
        return self.total_quantity - self.remaining_quantity


class EventKind(enum.StrEnum):
    """What a room event says happened."""

    POOL_SCHEDULED = "pool_scheduled"
    POOL_OPENED = "pool_opened"
    POOL_CHANGED = "pool_changed"
    STOCK_CHANGED = "stock_changed"
    POOL_SOLD_OUT = "pool_sold_out"
    POOL_CLOSED = "pool_closed"
    POOL_PINNED = "pool_pinned"
    POOL_UNPINNED = "pool_unpinned"
    POOL_RESENT = "pool_resent"


@dataclass(frozen=True, slots=True)
class EventDraft:
    """A room event before the store gives it its sequence number."""

    kind: EventKind
    pool: Pool


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """A committed room event with its per-room sequence number."""

    room_id: str
    sequence: int
    event_time: datetime
    kind: EventKind
    pool: Pool
    previous_lifecycle: int = 0
    """Sequence of the room's last lifecycle event before this one (0: none retained)."""

    @property
    def is_lifecycle(self) -> bool:
        """Every kind but a stock change: never coalesced away on a stream."""
        return self.kind is not EventKind.STOCK_CHANGED


class AllocationResult(NamedTuple):
    """The answer to one grab. A NamedTuple: one is built for every refusal, and a frozen
    dataclass takes several times longer to build (~1 µs against ~0.3)."""

    outcome: Outcome
    remaining_quantity: int
    server_time: datetime
    claim_start: datetime | None = None
    coupon: Coupon | None = None
    missing: tuple[Missing, ...] = ()
    """What the viewer lacks, when NOT_ELIGIBLE."""


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """A room's live pools as of one event sequence number."""

    room_id: str
    pools: tuple[Pool, ...]
    sequence: int
    server_time: datetime


class SnapshotReason(enum.StrEnum):
    """Why a subscriber is sent a snapshot."""

    INITIAL = "initial"
    RESUME_TOO_OLD = "resume_too_old"
    RESUME_UNKNOWN = "resume_unknown"
    LAGGING = "lagging"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing new for a while: the server's clock and the last sequence delivered."""

    server_time: datetime
    sequence: int


@dataclass(frozen=True, slots=True)
class SnapshotMessage:
    """A snapshot sent on a subscription, with why."""

    snapshot: RoomSnapshot
    reason: SnapshotReason
    eligibility: tuple[PoolEligibility, ...] = ()
    """For the subscribing viewer: pools with an eligibility rule."""


@dataclass(frozen=True, slots=True)
class EligibilityUpdate:
    """For the subscribing viewer: their eligibility for some pools, now."""

    pools: tuple[PoolEligibility, ...]
    server_time: datetime


SubscriptionItem = SnapshotMessage | RoomEvent | Heartbeat | EligibilityUpdate
"""What a room subscription yields, in order."""
