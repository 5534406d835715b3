"""Initial schema: rooms, pools, coupons, redemptions, room events (outbox), idempotency.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_LIVE = "released_at_us IS NULL"


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("room_id", sa.String(64), primary_key=True),
        sa.Column("streamer_id", sa.String(64), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("catalogue", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("last_event_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("first_retained_seq", sa.BigInteger, nullable=False, server_default=sa.text("1")),
        sa.CheckConstraint("last_event_seq >= 0", name="ck_rooms_seq"),
    )
    op.create_table(
        "pools",
        sa.Column("pool_id", sa.String(64), primary_key=True),
        sa.Column("room_id", sa.String(64), sa.ForeignKey("rooms.room_id"), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("terms", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("total_quantity", sa.BigInteger, nullable=False),
        sa.Column("remaining_quantity", sa.BigInteger, nullable=False),
        sa.Column("granted_quantity", sa.BigInteger, nullable=False),
        sa.Column("withdrawn_quantity", sa.BigInteger, nullable=False),
        sa.Column("per_viewer_limit", sa.Integer, nullable=False),
        sa.Column("claim_start_us", sa.BigInteger, nullable=False),
        sa.Column("claim_end_us", sa.BigInteger, nullable=True),
        sa.Column("valid_until_us", sa.BigInteger, nullable=True),
        sa.Column("valid_for_s", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.Column("closed_at_us", sa.BigInteger, nullable=True),
        sa.Column("close_reason", sa.String(16), nullable=True),
        sa.Column("announced_state", sa.String(16), nullable=False),
        sa.CheckConstraint("remaining_quantity >= 0", name="ck_pools_remaining_nonneg"),
        sa.CheckConstraint("granted_quantity >= 0", name="ck_pools_granted_nonneg"),
        sa.CheckConstraint("withdrawn_quantity >= 0", name="ck_pools_withdrawn_nonneg"),
        sa.CheckConstraint(
            "granted_quantity + remaining_quantity = total_quantity", name="ck_pools_conservation"
        ),
        sa.CheckConstraint("per_viewer_limit >= 1", name="ck_pools_limit"),
        sa.CheckConstraint(
            "(valid_until_us IS NULL) <> (valid_for_s IS NULL)", name="ck_pools_validity"
        ),
    )
    op.create_index("ix_pools_room", "pools", ["room_id"])
    op.create_index("ix_pools_announced", "pools", ["announced_state"])
    op.create_table(
        "coupons",
        sa.Column("coupon_id", sa.String(64), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("pool_id", sa.String(64), sa.ForeignKey("pools.pool_id"), nullable=False),
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("viewer_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("per_viewer_limit", sa.Integer, nullable=False),
        sa.Column("valid_from_us", sa.BigInteger, nullable=False),
        sa.Column("valid_until_us", sa.BigInteger, nullable=False),
        sa.Column("redeemed_order_id", sa.String(64), nullable=True),
        sa.UniqueConstraint("code", name="uq_coupons_code"),
        sa.UniqueConstraint("pool_id", "viewer_id", "slot", name="uq_coupons_viewer_slot"),
        sa.UniqueConstraint("viewer_id", "request_id", name="uq_coupons_request"),
        sa.CheckConstraint("slot >= 1 AND slot <= per_viewer_limit", name="ck_coupons_slot"),
    )
    op.create_index("ix_coupons_viewer", "coupons", ["viewer_id", "valid_from_us"])
    op.create_table(
        "redemptions",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("coupon_id", sa.String(64), sa.ForeignKey("coupons.coupon_id"), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("eligible_subtotal_minor", sa.BigInteger, nullable=False),
        sa.Column("discount_minor", sa.BigInteger, nullable=False),
        sa.Column("redeemed_at_us", sa.BigInteger, nullable=False),
        sa.Column("released_at_us", sa.BigInteger, nullable=True),
        sa.CheckConstraint(
            "discount_minor >= 0 AND discount_minor <= eligible_subtotal_minor",
            name="ck_redemptions_discount",
        ),
    )
    op.create_index(
        "uq_redemptions_live_coupon",
        "redemptions",
        ["coupon_id"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )
    op.create_table(
        "room_events",
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("pool_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("room_id", "seq", name="pk_room_events"),
        sa.CheckConstraint("seq >= 1", name="ck_room_events_seq"),
    )
    op.create_table(
        "idempotency",
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("subject", "request_id", name="pk_idempotency"),
    )


def downgrade() -> None:
    for table in ("idempotency", "room_events", "redemptions", "coupons", "pools", "rooms"):
        op.drop_table(table)
