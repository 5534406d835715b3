"""Pinned pools, resend rounds and claim windows relative to the push.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "pools", sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column(
        "pools", sa.Column("round", sa.Integer, nullable=False, server_default=sa.text("1"))
    )
    op.add_column("pools", sa.Column("claim_duration_s", sa.BigInteger, nullable=True))


def downgrade() -> None:
    for column in ("claim_duration_s", "round", "pinned"):
        op.drop_column("pools", column)
