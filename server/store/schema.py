"""Table definitions (SQLAlchemy Core); Alembic migrations create exactly these.

Times are integer microseconds since the Unix epoch (UTC), portable across SQLite and
PostgreSQL. The invariants live in the database as constraints, not only in Python.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()

rooms = Table(
    "rooms",
    metadata,
    Column("room_id", String(64), primary_key=True),
    Column("streamer_id", String(64), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("catalogue", Text, nullable=False),  # JSON: featured goods and linked shops
    Column("created_at_us", BigInteger, nullable=False),
    Column("last_event_seq", BigInteger, nullable=False, server_default=text("0")),
    # Events below this sequence were pruned; resuming from before it needs a snapshot.
    Column("first_retained_seq", BigInteger, nullable=False, server_default=text("1")),
    CheckConstraint("last_event_seq >= 0", name="ck_rooms_seq"),
)

pools = Table(
    "pools",
    metadata,
    Column("pool_id", String(64), primary_key=True),
    Column("room_id", String(64), ForeignKey("rooms.room_id"), nullable=False),
    Column("title", String(100), nullable=False),
    Column("terms", Text, nullable=False),  # JSON CouponTerms; immutable
    Column("target", Text, nullable=False),  # JSON Target; immutable
    Column("currency_code", String(3), nullable=False),
    Column("total_quantity", BigInteger, nullable=False),
    Column("remaining_quantity", BigInteger, nullable=False),
    Column("granted_quantity", BigInteger, nullable=False),
    Column("withdrawn_quantity", BigInteger, nullable=False),
    Column("per_viewer_limit", Integer, nullable=False),
    Column("claim_start_us", BigInteger, nullable=False),
    Column("claim_end_us", BigInteger, nullable=True),
    Column("valid_until_us", BigInteger, nullable=True),
    Column("valid_for_s", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    Column("closed_at_us", BigInteger, nullable=True),
    Column("close_reason", String(16), nullable=True),
    Column("announced_state", String(16), nullable=False),
    Column("stackable", Boolean, nullable=False, server_default=false()),
    Column("pinned", Boolean, nullable=False, server_default=false()),
    Column("round", Integer, nullable=False, server_default=text("1")),
    Column("claim_duration_s", BigInteger, nullable=True),
    Column("eligibility", Text, nullable=True),  # JSON Eligibility; NULL: every viewer
    CheckConstraint("remaining_quantity >= 0", name="ck_pools_remaining_nonneg"),
    CheckConstraint("granted_quantity >= 0", name="ck_pools_granted_nonneg"),
    CheckConstraint("withdrawn_quantity >= 0", name="ck_pools_withdrawn_nonneg"),
    CheckConstraint(
        "granted_quantity + remaining_quantity = total_quantity", name="ck_pools_conservation"
    ),
    CheckConstraint("per_viewer_limit >= 1", name="ck_pools_limit"),
    CheckConstraint("(valid_until_us IS NULL) <> (valid_for_s IS NULL)", name="ck_pools_validity"),
    Index("ix_pools_room", "room_id"),
    Index("ix_pools_announced", "announced_state"),
)

coupons = Table(
    "coupons",
    metadata,
    Column("coupon_id", String(64), primary_key=True),
    Column("code", String(64), nullable=False),
    Column("pool_id", String(64), ForeignKey("pools.pool_id"), nullable=False),
    Column("room_id", String(64), nullable=False),
    Column("viewer_id", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    # The viewer's n-th coupon of this pool: unique per (pool, viewer) and at most the limit,
    # so the database itself refuses a grant over the per-viewer limit.
    Column("slot", Integer, nullable=False),
    Column("per_viewer_limit", Integer, nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_until_us", BigInteger, nullable=False),
    # The order holding it: confirmed (lock_expires_at_us NULL) or locked until
    # lock_expires_at_us (a lock past it no longer holds the coupon).
    Column("redeemed_order_id", String(64), nullable=True),
    Column("lock_expires_at_us", BigInteger, nullable=True),
    Column("release_count", Integer, nullable=False, server_default=text("0")),
    # The pool's n-th grant, in the order decided: the winner list.
    Column("grant_seq", BigInteger, nullable=False, server_default=text("0")),
    UniqueConstraint("code", name="uq_coupons_code"),
    UniqueConstraint("pool_id", "viewer_id", "slot", name="uq_coupons_viewer_slot"),
    UniqueConstraint("viewer_id", "request_id", name="uq_coupons_request"),
    CheckConstraint("slot >= 1 AND slot <= per_viewer_limit", name="ck_coupons_slot"),
    Index("ix_coupons_viewer", "viewer_id", "valid_from_us"),
    Index("uq_coupons_grant_seq", "pool_id", "grant_seq", unique=True),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("order_id", String(64), nullable=False),
    Column("coupon_id", String(64), ForeignKey("coupons.coupon_id"), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("eligible_subtotal_minor", BigInteger, nullable=False),
    Column("discount_minor", BigInteger, nullable=False),
    Column("redeemed_at_us", BigInteger, nullable=False),  # locked (or redeemed in one step)
    Column("released_at_us", BigInteger, nullable=True),
    Column("state", String(16), nullable=False),
    Column("lock_expires_at_us", BigInteger, nullable=True),
    Column("confirmed_at_us", BigInteger, nullable=True),
    Column("release_reason", String(16), nullable=True),
    Column("partially_refunded", Boolean, nullable=False, server_default=false()),
    Column("refunded_at_us", BigInteger, nullable=True),
    PrimaryKeyConstraint("order_id", "coupon_id", name="pk_redemptions"),
    CheckConstraint(
        "discount_minor >= 0 AND discount_minor <= eligible_subtotal_minor",
        name="ck_redemptions_discount",
    ),
    CheckConstraint(
        "state IN ('locked', 'confirmed', 'released', 'refunded')", name="ck_redemptions_state"
    ),
    # One live redemption per coupon (a lock past its expiry is released before another
    # order may lock the coupon).
    Index(
        "uq_redemptions_live_coupon",
        "coupon_id",
        unique=True,
        sqlite_where=text("released_at_us IS NULL"),
        postgresql_where=text("released_at_us IS NULL"),
    ),
)

room_events = Table(
    "room_events",
    metadata,
    Column("room_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("pool_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # JSON: the pool as of the event
    Column("created_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("room_id", "seq", name="pk_room_events"),
    CheckConstraint("seq >= 1", name="ck_room_events_seq"),
    Index("ix_room_events_created", "created_at_us"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("subject", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("method", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("result", Text, nullable=False),  # JSON of the answer given
    Column("created_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("subject", "request_id", name="pk_idempotency"),
)

# Viewers' watching sessions, shared by server processes on one database (see
# server/service/watch.py): when the session started, when it was last seen, and until when
# an open stream vouches for it.
watch_sessions = Table(
    "watch_sessions",
    metadata,
    Column("room_id", String(64), nullable=False),
    Column("viewer_id", String(64), nullable=False),
    Column("started_at_us", BigInteger, nullable=False),
    Column("seen_at_us", BigInteger, nullable=False),
    Column("live_until_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("room_id", "viewer_id", name="pk_watch_sessions"),
    Index("ix_watch_sessions_seen", "seen_at_us"),
)
