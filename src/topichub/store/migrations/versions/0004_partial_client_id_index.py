"""Messages: the retry index covers only the messages that carry a client id.

Most publishes carry none, and every row in a unique index costs a B-tree insert on the
hot path (about 4 µs per message on SQLite here); the index exists only to find a retried
publish by its client id, and a NULL client id never matches one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ["topic_id", "sender_id", "client_id"]
HAS_CLIENT_ID = sa.text("client_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ux_messages_client_id", table_name="messages")
    op.create_index(
        "ux_messages_client_id",
        "messages",
        COLUMNS,
        unique=True,
        sqlite_where=HAS_CLIENT_ID,
        postgresql_where=HAS_CLIENT_ID,
    )


def downgrade() -> None:
    op.drop_index("ux_messages_client_id", table_name="messages")
    op.create_index("ux_messages_client_id", "messages", COLUMNS, unique=True)
