"""Viewers' watching sessions, shared by the server processes of one database.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watch_sessions",
        sa.Column("room_id", sa.String(64), nullable=False),
        sa.Column("viewer_id", sa.String(64), nullable=False),
        sa.Column("started_at_us", sa.BigInteger, nullable=False),
        sa.Column("seen_at_us", sa.BigInteger, nullable=False),
        sa.Column("live_until_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("room_id", "viewer_id", name="pk_watch_sessions"),
    )
    op.create_index("ix_watch_sessions_seen", "watch_sessions", ["seen_at_us"])


def downgrade() -> None:
    op.drop_table("watch_sessions")
