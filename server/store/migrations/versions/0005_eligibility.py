"""Who may grab from a pool (followers, new buyers, watch time).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pools", sa.Column("eligibility", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("pools", "eligibility")
