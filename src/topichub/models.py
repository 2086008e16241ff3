"""Plain records passed between the layers. No behaviour, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class TopicKind(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    DIRECT = "direct"


class Role(enum.StrEnum):
    OWNER = "owner"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str
    is_admin: bool
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Topic:
    id: int
    name: str
    kind: TopicKind
    owner: str | None
    last_seq: int
    created_at_ms: int
    # For a direct conversation, the two usernames (sorted); None for other topics.
    direct_pair: tuple[str, str] | None = None

    @property
    def is_private(self) -> bool:
        return self.kind is not TopicKind.PUBLIC


@dataclass(frozen=True, slots=True)
class Membership:
    topic_id: int
    user_id: int
    role: Role
    joined_seq: int
    delivered_seq: int


@dataclass(frozen=True, slots=True)
class TopicSummary:
    """A row of ``list_topics``: what one user sees of one topic."""

    name: str
    is_private: bool
    owner: str | None
    members: int
    member: bool


# A pending replay's row (Store.read_page): (seq, sender, content as its UTF-8 bytes,
# sent_at_ms). The replay splices the content into frames as read, so no str is made
# (or encoded again) per message.
PageRow = tuple[int, str, bytes, int]


class MessageRecord(NamedTuple):
    """One message of a topic's log, as stored.

    ``content`` is the JSON text of the content, kept as text from the publisher's frame to
    every socket so it is never decoded and re-encoded per recipient. A named tuple rather
    than a frozen dataclass: just as immutable, and several times cheaper to build, which
    a pending replay of 100,000s of messages feels.
    """

    topic_id: int
    topic_name: str
    seq: int
    sender: str
    content: str
    sent_at_ms: int
    client_id: str | None = None
    direct_pair: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PendingRange:
    """Messages ``after < seq <= upto`` of one topic are pending for a user.

    ``count`` excludes the user's own messages, which are never pending for them.
    ``lost`` counts messages past the cursor that retention removed before delivery
    (``after < seq <= trimmed``), which the client is told about instead of silently missing.
    """

    topic: Topic
    after: int
    upto: int
    count: int
    lost: int = 0
    trimmed: int = 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One running node's heartbeat row (admin view; docs/protocol.md, admin stats)."""

    node_id: str
    ws_address: str
    api_address: str
    version: str
    started_at_ms: int
    seen_at_ms: int
    connections: int
    users: int  # distinct users with an open connection on the node


@dataclass(frozen=True, slots=True)
class TopicActivity:
    """A public or private topic as the admin view shows it."""

    name: str
    is_private: bool
    owner: str | None
    members: int
    last_seq: int
    recent: int  # messages stored since the window given to ``Store.topic_activity``


@dataclass(frozen=True, slots=True)
class UserBacklog:
    """How many messages wait for a user (pending: past their cursors, not their own)."""

    username: str
    messages: int
    topics: int
