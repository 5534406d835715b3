"""Index room events by commit time, so pruning old events does not scan the outbox.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_room_events_created", "room_events", ["created_at_us"])


def downgrade() -> None:
    op.drop_index("ix_room_events_created", table_name="room_events")
