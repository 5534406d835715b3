"""Pool rules: validating a configuration, and every change to a pool with the events it emits."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from server.domain import eligibility
from server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    PreconditionViolation,
    VersionConflict,
    require,
)
from server.domain.models import (
    CloseReason,
    CouponKind,
    EventDraft,
    EventKind,
    Pool,
    PoolSpec,
    PoolState,
    Room,
)
from server.domain.options import Limits
from server.domain.validation import check_range, check_text

_MAX_TARGET_GOODS = 1000
_MAX_TARGET_SHOPS = 100


def validate_spec(spec: PoolSpec, room: Room, limits: Limits, now: datetime, prefix: str) -> None:
    """Raise InvalidArgument unless `spec` is within the room's configuration options."""
    out: list[FieldViolation] = []
    check_text(spec.title, f"{prefix}.title", 100, out, required=True)
    _check_terms(spec, limits, f"{prefix}.terms", out)
    _check_target(spec, room, f"{prefix}.target", out)
    check_range(spec.total_quantity, limits.quantity, f"{prefix}.total_quantity", out)
    check_range(spec.per_viewer_limit, limits.per_viewer_limit, f"{prefix}.per_viewer_limit", out)
    start = spec.claim_start if spec.claim_start and spec.claim_start > now else now
    if start - now > limits.max_claim_start_delay:
        out.append(
            FieldViolation(
                f"{prefix}.claim_start_time",
                f"must be at most {limits.max_claim_start_delay} from now",
            )
        )
    _check_window(start, spec.claim_end, limits, now, prefix, out)
    _check_duration(spec.claim_duration, spec.claim_end, limits, f"{prefix}.claim_duration", out)
    eligibility.validate(spec.eligibility, f"{prefix}.eligibility", out)
    end = spec.claim_end or (start + spec.claim_duration if spec.claim_duration else None)
    _check_validity(replace(spec, claim_end=end), start, limits, now, prefix, out)
    require(out)


def _check_duration(
    duration: timedelta | None,
    end: datetime | None,
    limits: Limits,
    field: str,
    out: list[FieldViolation],
) -> None:
    if duration is None:
        return
    if end is not None:
        out.append(FieldViolation(field, "cannot be set together with claim_end_time"))
    elif duration % timedelta(seconds=1):
        out.append(FieldViolation(field, "must be whole seconds"))
    elif not limits.min_claim_window <= duration <= limits.max_claim_window:
        out.append(
            FieldViolation(
                field,
                f"must be between {limits.min_claim_window} and {limits.max_claim_window}",
            )
        )


def _check_terms(spec: PoolSpec, limits: Limits, field: str, out: list[FieldViolation]) -> None:
    terms = spec.terms
    if terms.kind not in limits.coupon_kinds:
        out.append(FieldViolation(f"{field}.kind", "must be one of the room's coupon kinds"))
        return
    if terms.kind is CouponKind.FIXED_AMOUNT:
        check_range(
            terms.amount_off_minor, limits.amount_off_minor, f"{field}.amount_off_minor", out
        )
        if terms.percent_off:
            out.append(FieldViolation(f"{field}.percent_off", "must be 0 for a fixed amount"))
        if terms.max_discount_minor:
            out.append(
                FieldViolation(f"{field}.max_discount_minor", "must be 0 for a fixed amount")
            )
    else:
        check_range(terms.percent_off, limits.percent_off, f"{field}.percent_off", out)
        if terms.amount_off_minor:
            out.append(FieldViolation(f"{field}.amount_off_minor", "must be 0 for percent off"))
        if terms.max_discount_minor < 0:
            out.append(FieldViolation(f"{field}.max_discount_minor", "must not be negative"))
    if terms.min_spend_minor < 0:
        out.append(FieldViolation(f"{field}.min_spend_minor", "must not be negative"))


def _check_target(spec: PoolSpec, room: Room, field: str, out: list[FieldViolation]) -> None:
    target = spec.target
    if not target.goods_ids and not target.shop_ids:
        out.append(FieldViolation(field, "must name at least one goods or shop of the room"))
        return
    if len(target.goods_ids) > _MAX_TARGET_GOODS:
        out.append(FieldViolation(f"{field}.goods_ids", f"at most {_MAX_TARGET_GOODS}"))
    if len(target.shop_ids) > _MAX_TARGET_SHOPS:
        out.append(FieldViolation(f"{field}.shop_ids", f"at most {_MAX_TARGET_SHOPS}"))
    goods = room.goods_by_id()
    for i, goods_id in enumerate(target.goods_ids):
        if goods_id not in goods:
            out.append(
                FieldViolation(
                    f"{field}.goods_ids[{i}]", f"{goods_id!r} is not a goods of this room"
                )
            )
        elif goods_id in target.goods_ids[:i]:
            out.append(FieldViolation(f"{field}.goods_ids[{i}]", f"{goods_id!r} is repeated"))
    shops = {s.shop_id for s in room.linked_shops}
    for i, shop_id in enumerate(target.shop_ids):
        if shop_id not in shops:
            out.append(
                FieldViolation(
                    f"{field}.shop_ids[{i}]", f"{shop_id!r} is not a shop linked to this room"
                )
            )
        elif shop_id in target.shop_ids[:i]:
            out.append(FieldViolation(f"{field}.shop_ids[{i}]", f"{shop_id!r} is repeated"))


def _check_window(
    start: datetime,
    end: datetime | None,
    limits: Limits,
    now: datetime,
    prefix: str,
    out: list[FieldViolation],
) -> None:
    if end is None:
        return
    field = f"{prefix}.claim_end_time"
    if end <= now:
        out.append(FieldViolation(field, "must be in the future"))
    elif not limits.min_claim_window <= end - start <= limits.max_claim_window:
        out.append(
            FieldViolation(
                field,
                f"the claim window must last between "
                f"{limits.min_claim_window} and {limits.max_claim_window}",
            )
        )


def _check_validity(
    spec: PoolSpec,
    start: datetime,
    limits: Limits,
    now: datetime,
    prefix: str,
    out: list[FieldViolation],
) -> None:
    validity = spec.validity
    field = f"{prefix}.validity"
    if (validity.valid_for is None) == (validity.valid_until is None):
        out.append(FieldViolation(field, "exactly one of valid_until and valid_for is required"))
        return
    if validity.valid_for is not None:
        if not limits.min_validity <= validity.valid_for <= limits.max_validity:
            out.append(
                FieldViolation(
                    f"{field}.valid_for",
                    f"must be between {limits.min_validity} and {limits.max_validity}",
                )
            )
        elif validity.valid_for.microseconds:
            out.append(FieldViolation(f"{field}.valid_for", "must be whole seconds"))
        return
    assert validity.valid_until is not None
    _check_valid_until(
        validity.valid_until, spec.claim_end, limits, now, f"{field}.valid_until", out
    )


def _check_valid_until(
    valid_until: datetime,
    claim_end: datetime | None,
    limits: Limits,
    now: datetime,
    field: str,
    out: list[FieldViolation],
) -> None:
    # Every coupon granted must be usable for at least min_validity, so an absolute end
    # needs a bounded claim window that ends at least that long before it.
    if claim_end is None:
        out.append(FieldViolation(field, "requires claim_end_time to be set"))
    elif valid_until < claim_end + limits.min_validity:
        out.append(
            FieldViolation(
                field, f"must be at least {limits.min_validity} after the claim window ends"
            )
        )
    if valid_until - now > limits.max_validity:
        out.append(FieldViolation(field, f"must be at most {limits.max_validity} from now"))


def new_pool(spec: PoolSpec, room: Room, pool_id: str, now: datetime) -> tuple[Pool, EventDraft]:
    """The pool a valid spec creates and the event announcing it."""
    start = spec.claim_start if spec.claim_start and spec.claim_start > now else now
    pool = Pool(
        pool_id=pool_id,
        room_id=room.room_id,
        title=spec.title.strip(),
        terms=spec.terms,
        target=spec.target,
        total_quantity=spec.total_quantity,
        remaining_quantity=spec.total_quantity,
        granted_quantity=0,
        withdrawn_quantity=0,
        per_viewer_limit=spec.per_viewer_limit,
        claim_start=start,
        claim_end=spec.claim_end or (start + spec.claim_duration if spec.claim_duration else None),
        validity=spec.validity,
        currency_code=room.currency_code,
        version=1,
        created_at=now,
        updated_at=now,
        stackable=spec.stackable,
        claim_duration=spec.claim_duration,
        eligibility=spec.eligibility,
    )
    state = pool.state_at(now)
    kind = EventKind.POOL_OPENED if state is PoolState.OPEN else EventKind.POOL_SCHEDULED
    pool = pool.with_changes(announced_state=state)
    return pool, EventDraft(kind, pool)


def _require_changeable(pool: Pool, expected_version: int, now: datetime) -> None:
    if pool.version != expected_version:
        raise VersionConflict(pool.pool_id, expected_version, pool.version)
    if pool.state_at(now) is PoolState.CLOSED:
        raise FailedPrecondition(
            [
                PreconditionViolation(
                    "POOL_CLOSED",
                    f"pools/{pool.pool_id}",
                    "the pool is closed; closed pools are final",
                )
            ]
        )


def add_stock(
    pool: Pool, quantity: int, expected_version: int, limits: Limits, now: datetime, field: str
) -> tuple[Pool, list[EventDraft]]:
    """Add stock to a pool that is not closed."""
    _require_changeable(pool, expected_version, now)
    out: list[FieldViolation] = []
    check_range(quantity, limits.stock_increment, field, out)
    if not out and pool.total_quantity + quantity > limits.quantity[1]:
        out.append(FieldViolation(field, f"the new total would exceed {limits.quantity[1]}"))
    require(out)
    changed = pool.with_changes(
        total_quantity=pool.total_quantity + quantity,
        remaining_quantity=pool.remaining_quantity + quantity,
        version=pool.version + 1,
        updated_at=now,
    )
    return _announce_change(changed, now)


def update_window(
    pool: Pool,
    start: datetime | None,
    end: datetime | None,
    expected_version: int,
    limits: Limits,
    now: datetime,
    prefix: str,
) -> tuple[Pool, list[EventDraft]]:
    """Change a pool's claim window; the start can only move while the pool is scheduled."""
    _require_changeable(pool, expected_version, now)
    out: list[FieldViolation] = []
    scheduled = pool.state_at(now) is PoolState.SCHEDULED
    if start is None:
        out.append(FieldViolation(f"{prefix}.claim_start_time", "is required"))
        new_start = pool.claim_start
    elif scheduled:
        new_start = start if start > now else now
        if new_start - now > limits.max_claim_start_delay:
            out.append(
                FieldViolation(
                    f"{prefix}.claim_start_time",
                    f"must be at most {limits.max_claim_start_delay} from now",
                )
            )
    else:
        new_start = pool.claim_start
        if start != pool.claim_start:
            out.append(
                FieldViolation(
                    f"{prefix}.claim_start_time", "cannot change once the pool has opened"
                )
            )
    end = _window_end(pool, new_start, end, limits, now, prefix, out)
    require(out)
    changed = pool.with_changes(
        claim_start=new_start, claim_end=end, version=pool.version + 1, updated_at=now
    )
    return _announce_change(changed, now)


def _window_end(
    pool: Pool,
    start: datetime,
    end: datetime | None,
    limits: Limits,
    now: datetime,
    prefix: str,
    out: list[FieldViolation],
) -> datetime | None:
    """The end of a window starting at `start`: the pool's claim_duration sets it (then
    `end` must be unset), else the `end` asked for, checked against the limits and against
    an absolute coupon validity."""
    if pool.claim_duration is not None:
        if end is not None:
            out.append(
                FieldViolation(
                    f"{prefix}.claim_end_time",
                    "must be unset: the pool's claim_duration sets its end",
                )
            )
        end = start + pool.claim_duration
    else:
        _check_window(start, end, limits, now, prefix, out)
    if pool.validity.valid_until is not None:
        _check_valid_until(
            pool.validity.valid_until, end, limits, now, f"{prefix}.claim_end_time", out
        )
    return end


def stop(pool: Pool, expected_version: int, now: datetime) -> tuple[Pool, list[EventDraft]]:
    """Stop a pool early, withdrawing its unclaimed stock."""
    _require_changeable(pool, expected_version, now)
    closed = _close(
        pool.with_changes(version=pool.version + 1, updated_at=now), now, CloseReason.STOPPED
    )
    return closed, [EventDraft(EventKind.POOL_CLOSED, closed)]


def _close(pool: Pool, now: datetime, reason: CloseReason) -> Pool:
    withdrawn = pool.remaining_quantity
    return pool.with_changes(
        total_quantity=pool.total_quantity - withdrawn,
        remaining_quantity=0,
        withdrawn_quantity=pool.withdrawn_quantity + withdrawn,
        closed_at=now,
        close_reason=reason,
        announced_state=PoolState.CLOSED,
        pinned=False,
    )


def pin(
    pool: Pool, expected_version: int, pinned: list[Pool], now: datetime
) -> tuple[list[Pool], list[EventDraft]]:
    """Pin a pool that is not closed; the room's `pinned` pools (others) are unpinned."""
    _require_changeable(pool, expected_version, now)
    if pool.pinned:
        return [], []
    changed: list[Pool] = []
    events: list[EventDraft] = []
    for other in pinned:
        if other.pool_id != pool.pool_id:
            off = other.with_changes(pinned=False, version=other.version + 1, updated_at=now)
            changed.append(off)
            events.append(EventDraft(EventKind.POOL_UNPINNED, off))
    on = pool.with_changes(pinned=True, version=pool.version + 1, updated_at=now)
    return [*changed, on], [*events, EventDraft(EventKind.POOL_PINNED, on)]


def unpin(pool: Pool, expected_version: int, now: datetime) -> tuple[Pool, list[EventDraft]]:
    """Unpin a pinned pool."""
    _require_changeable(pool, expected_version, now)
    if not pool.pinned:
        raise FailedPrecondition(
            [PreconditionViolation("POOL_NOT_PINNED", f"pools/{pool.pool_id}", "not pinned")]
        )
    off = pool.with_changes(pinned=False, version=pool.version + 1, updated_at=now)
    return off, [EventDraft(EventKind.POOL_UNPINNED, off)]


def resend(
    pool: Pool,
    expected_version: int,
    end: datetime | None,
    limits: Limits,
    now: datetime,
    prefix: str,
) -> tuple[Pool, list[EventDraft]]:
    """Open a closed pool again now, as a new round, with the stock withdrawn at closing."""
    if pool.version != expected_version:
        raise VersionConflict(pool.pool_id, expected_version, pool.version)
    subject = f"pools/{pool.pool_id}"
    if pool.state_at(now) is not PoolState.CLOSED:
        raise FailedPrecondition(
            [PreconditionViolation("POOL_NOT_CLOSED", subject, "only a closed pool is resent")]
        )
    if pool.withdrawn_quantity <= 0:
        raise FailedPrecondition(
            [PreconditionViolation("NOTHING_TO_RESEND", subject, "no stock was withdrawn")]
        )
    out: list[FieldViolation] = []
    end = _window_end(pool, now, end, limits, now, prefix, out)
    require(out)
    back = pool.withdrawn_quantity
    reopened = pool.with_changes(
        total_quantity=pool.total_quantity + back,
        remaining_quantity=pool.remaining_quantity + back,
        withdrawn_quantity=0,
        claim_start=now,
        claim_end=end,
        closed_at=None,
        close_reason=None,
        announced_state=PoolState.OPEN,
        round=pool.round + 1,
        version=pool.version + 1,
        updated_at=now,
    )
    return reopened, [EventDraft(EventKind.POOL_RESENT, reopened)]


def _announce_change(pool: Pool, now: datetime) -> tuple[Pool, list[EventDraft]]:
    state = pool.state_at(now)
    changed = pool.with_changes(announced_state=state)
    return changed, [EventDraft(EventKind.POOL_CHANGED, changed)]


def due_transitions(pool: Pool, now: datetime) -> tuple[Pool, list[EventDraft]]:
    """Announce what time alone changed (window opened or ended) since the last announcement."""
    state = pool.state_at(now)
    if state is pool.announced_state:
        return pool, []
    if state is PoolState.CLOSED:
        # Only the clock can get here: streamer stops announce themselves.
        closed = _close(pool, pool.claim_end or now, CloseReason.WINDOW_ENDED)
        return closed, [EventDraft(EventKind.POOL_CLOSED, closed)]
    if pool.announced_state is PoolState.SCHEDULED:
        opened = pool.with_changes(announced_state=state)
        kind = EventKind.POOL_OPENED if state is PoolState.OPEN else EventKind.POOL_SOLD_OUT
        return opened, [EventDraft(kind, opened)]
    return pool.with_changes(announced_state=state), []
