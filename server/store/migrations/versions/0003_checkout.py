"""Checkout in two steps, stacking and the winner list.

- redemptions: one row per (order, coupon), since an order may hold several coupons; each
  row has a state (locked, confirmed, released, refunded), its lock expiry, confirmation,
  release reason and refund. Existing rows become confirmed (or released, if they were).
- coupons: the lock expiry of the order holding it, how many times it went back to its
  viewer, and its place in its pool's grants (`grant_seq`, filled in for existing coupons
  in the order they were granted).
- pools: whether their coupons combine with others of the room on one order.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LIVE = "released_at_us IS NULL"


def upgrade() -> None:
    op.add_column(
        "pools", sa.Column("stackable", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column("coupons", sa.Column("lock_expires_at_us", sa.BigInteger, nullable=True))
    op.add_column(
        "coupons",
        sa.Column("release_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "coupons",
        sa.Column("grant_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    # Existing grants, numbered per pool in the order they were made.
    op.execute(
        "UPDATE coupons SET grant_seq = (SELECT COUNT(*) FROM coupons AS c2"
        " WHERE c2.pool_id = coupons.pool_id AND (c2.valid_from_us < coupons.valid_from_us"
        " OR (c2.valid_from_us = coupons.valid_from_us AND c2.coupon_id <= coupons.coupon_id)))"
    )
    op.create_index("uq_coupons_grant_seq", "coupons", ["pool_id", "grant_seq"], unique=True)

    op.create_table(
        "redemptions_v3",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("coupon_id", sa.String(64), sa.ForeignKey("coupons.coupon_id"), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("eligible_subtotal_minor", sa.BigInteger, nullable=False),
        sa.Column("discount_minor", sa.BigInteger, nullable=False),
        sa.Column("redeemed_at_us", sa.BigInteger, nullable=False),
        sa.Column("released_at_us", sa.BigInteger, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lock_expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("confirmed_at_us", sa.BigInteger, nullable=True),
        sa.Column("release_reason", sa.String(16), nullable=True),
        sa.Column("partially_refunded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("refunded_at_us", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("order_id", "coupon_id", name="pk_redemptions"),
        sa.CheckConstraint(
            "discount_minor >= 0 AND discount_minor <= eligible_subtotal_minor",
            name="ck_redemptions_discount",
        ),
        sa.CheckConstraint(
            "state IN ('locked', 'confirmed', 'released', 'refunded')",
            name="ck_redemptions_state",
        ),
    )
    op.execute(
        "INSERT INTO redemptions_v3 (order_id, coupon_id, fingerprint, eligible_subtotal_minor,"
        " discount_minor, redeemed_at_us, released_at_us, state, confirmed_at_us,"
        " release_reason)"
        " SELECT order_id, coupon_id, fingerprint, eligible_subtotal_minor, discount_minor,"
        " redeemed_at_us, released_at_us,"
        " CASE WHEN released_at_us IS NULL THEN 'confirmed' ELSE 'released' END,"
        " redeemed_at_us,"
        " CASE WHEN released_at_us IS NULL THEN NULL ELSE 'order_cancelled' END"
        " FROM redemptions"
    )
    op.drop_index("uq_redemptions_live_coupon", table_name="redemptions")
    op.drop_table("redemptions")
    op.rename_table("redemptions_v3", "redemptions")
    op.create_index(
        "uq_redemptions_live_coupon",
        "redemptions",
        ["coupon_id"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )


def downgrade() -> None:
    raise NotImplementedError("0003 is not reversible: orders may hold several coupons")
