"""Nodes: a heartbeat row per running node, for the admin view.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("ws_address", sa.String(300), nullable=False),
        sa.Column("api_address", sa.String(300), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.Column("connections", sa.Integer, nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
    )
    op.create_index("ix_nodes_seen_at", "nodes", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_nodes_seen_at", table_name="nodes")
    op.drop_table("nodes")
