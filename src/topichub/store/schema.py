"""Table definitions (DESIGN.md, "Data model"). Migrations create them; this module only
describes them for queries. Keep it in step with ``migrations/versions``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Usernames and topic names share one namespace (PROTOCOL.md, "Names"): both claim a row
# here first, so a name is taken at most once even when two requests race.
names = sa.Table(
    "names",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),  # "user" or "topic"
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

topics = sa.Table(
    "topics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),  # public | private | direct
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL")),
    sa.Column("last_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # Retention removed every message with seq <= trimmed_seq (migration 0002).
    sa.Column("trimmed_seq", sa.BigInteger, nullable=False, server_default="0"),
)

members = sa.Table(
    "members",
    metadata,
    sa.Column(
        "topic_id", sa.Integer, sa.ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("role", sa.String(8), nullable=False),
    sa.Column("joined_seq", sa.BigInteger, nullable=False),
    sa.Column("delivered_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_members_user_id", "user_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column(
        "topic_id", sa.Integer, sa.ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    # The sender's id and name are copied in, not referenced: the log outlives accounts.
    sa.Column("sender_id", sa.Integer, nullable=False),
    sa.Column("sender", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("client_id", sa.String(64)),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # Finds a retried publish by its client id; only messages that have one are indexed
    # (migration 0004): most have none, and each index entry costs on every append.
    sa.Index(
        "ux_messages_client_id",
        "topic_id",
        "sender_id",
        "client_id",
        unique=True,
        sqlite_where=sa.text("client_id IS NOT NULL"),
        postgresql_where=sa.text("client_id IS NOT NULL"),
    ),
)

# One row per running node, refreshed every few seconds (migration 0003): the admin view
# lists the nodes seen recently with their connection counts.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("ws_address", sa.String(300), nullable=False),
    sa.Column("api_address", sa.String(300), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("seen_at", sa.BigInteger, nullable=False),
    sa.Column("connections", sa.Integer, nullable=False),
    sa.Column("users", sa.Integer, nullable=False),
    sa.Index("ix_nodes_seen_at", "seen_at"),
)
