"""The store interface: the contract every backend honours (docs/architecture.md).

The store is the source of truth. Each message is appended once to its topic's log and
given the next ``seq`` of that topic (1, 2, 3... with no gap and no duplicate, whatever the
number of concurrent publishers or nodes). Each member has a cursor, ``delivered_seq``:
"pending for user U" is every message with ``seq > delivered_seq`` in U's topics that U did
not send. Cursors only move forward.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import NamedTuple

from topichub.models import (
    Membership,
    MessageRecord,
    NodeInfo,
    PageRow,
    PendingRange,
    Role,
    Topic,
    TopicActivity,
    TopicKind,
    TopicSummary,
    User,
    UserBacklog,
)


class AppendRequest(NamedTuple):
    """One publish to append (a named tuple: one is built per publish)."""

    topic: Topic
    sender_id: int
    sender: str
    content: str
    client_id: str | None


AppendResult = tuple[MessageRecord, bool]  # the stored record; True if a duplicate
# Called once per append when its transaction is done: with the result, or the error that
# refused this append (its topic was deleted, the database is unavailable...).
Committed = Callable[[AppendResult | Exception], None]


class CursorUpdate(NamedTuple):
    """A member's cursor moves forward to ``seq`` (a named tuple: every cursor flush
    builds one per connection that received something)."""

    user_id: int
    topic_id: int
    seq: int


class Store(ABC):
    """Durable state. Every method is safe to call concurrently."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and bring the schema to the newest migration."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued appends and release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    # -- users ----------------------------------------------------------------------------

    @abstractmethod
    async def create_user(self, username: str, password_hash: str, is_admin: bool) -> User:
        """Raise ``AlreadyExists`` if the name is taken by a user or a topic."""

    @abstractmethod
    async def get_user(self, username: str) -> User | None: ...

    @abstractmethod
    async def get_user_by_id(self, user_id: int) -> User | None: ...

    @abstractmethod
    async def list_users(self) -> list[User]: ...

    @abstractmethod
    async def delete_user(self, user_id: int) -> None:
        """Remove the user, their memberships and direct conversations; free the name."""

    # -- topics and members ---------------------------------------------------------------

    @abstractmethod
    async def create_topic(self, name: str, kind: TopicKind, owner_id: int) -> Topic:
        """Create a public or private topic with its owner as first member.

        Raise ``AlreadyExists`` if the name is taken by a user or a topic.
        """

    @abstractmethod
    async def get_topic(self, name: str) -> Topic | None:
        """A topic by its name (direct conversations included, under their internal name)."""

    @abstractmethod
    async def get_or_create_direct(self, a: User, b: User) -> Topic:
        """The direct conversation of two users, made on first use with both as members."""

    @abstractmethod
    async def delete_topic(self, topic_id: int) -> None: ...

    @abstractmethod
    async def list_topics(self, user_id: int) -> list[TopicSummary]:
        """Public topics and the private ones the user belongs to (never direct ones)."""

    @abstractmethod
    async def add_member(self, topic_id: int, user_id: int, role: Role) -> int | None:
        """Join at the topic's current end (older messages are history, not pending).

        Return that end (the joined seq), or None if the user already was a member.
        """

    @abstractmethod
    async def remove_member(self, topic_id: int, user_id: int) -> bool:
        """Return False if the user was not a member."""

    @abstractmethod
    async def get_membership(self, topic_id: int, user_id: int) -> Membership | None: ...

    @abstractmethod
    async def list_members(self, topic_id: int) -> list[tuple[str, Role]]: ...

    @abstractmethod
    async def user_topics(self, user_id: int) -> list[Topic]:
        """Every topic (direct conversations included) the user is a member of."""

    # -- the log --------------------------------------------------------------------------

    @abstractmethod
    def submit_then(self, request: AppendRequest, committed: Committed) -> None:
        """Queue an append; ``committed`` gets the stored record once it is committed.

        The second value of the record is True when ``client_id`` was already used by this
        sender in this topic: the message was not stored again and the first record is
        returned. Concurrent appends may share one transaction (group commit). Callbacks
        run in the order the appends were submitted, one after the other, straight from
        the writer (not scheduled): a caller that keeps several appends in flight (a
        pipelining publisher) sees its commits, and sends its replies, in order, and a
        busy node pays no future and no loop callback per publish. A callback that raises
        is logged and does not stop the others.
        """

    def submit(self, request: AppendRequest) -> asyncio.Future[AppendResult]:
        """``submit_then`` with a future that resolves with the result (or fails)."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()

        def settle(result: AppendResult | Exception) -> None:
            if future.done():
                return  # its caller was cancelled
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit_then(request, settle)
        return future

    async def append(self, request: AppendRequest) -> AppendResult:
        """Append durably and return the stored record once committed (see ``submit_then``)."""
        return await self.submit(request)

    @abstractmethod
    async def history(
        self, topic: Topic, *, before: int | None, since: int | None, limit: int
    ) -> list[MessageRecord]:
        """Oldest first. With ``since`` alone, the oldest ``limit`` after it; otherwise the
        newest ``limit`` (below ``before`` if given). Both bounds are exclusive."""

    @abstractmethod
    async def pending_ranges(self, user_id: int) -> list[PendingRange]:
        """For each of the user's topics with messages past their cursor, the range and the
        count of messages in it not sent by the user, read in one consistent snapshot."""

    @abstractmethod
    async def read_range(
        self, topic: Topic, *, after: int, upto: int, exclude_sender_id: int | None, limit: int
    ) -> list[MessageRecord]:
        """Messages ``after < seq <= upto``, oldest first, at most ``limit``."""

    @abstractmethod
    async def read_page(
        self, topic: Topic, *, after: int, upto: int, exclude_sender_id: int, limit: int
    ) -> Sequence[PageRow]:
        """``read_range`` for the pending replay, as rows: what its page encoder
        (``wire.events.pending_page``) takes."""

    @abstractmethod
    async def trim(self, *, keep_last: int, older_than_ms: int | None) -> int:
        """Retention: drop all but the newest ``keep_last`` messages of each topic (0: no
        count limit) and those created before ``older_than_ms`` (None: no age limit).
        Returns how many messages were removed."""

    @abstractmethod
    async def advance_cursors(self, updates: Sequence[CursorUpdate]) -> None:
        """Move each cursor forward to ``seq`` (never backward)."""

    # -- nodes and the admin view ---------------------------------------------------------

    @abstractmethod
    async def heartbeat(self, node: NodeInfo, *, forget_before_ms: int) -> None:
        """Insert or update the node's row; drop rows of nodes last seen before
        ``forget_before_ms`` (nodes that crashed long ago)."""

    @abstractmethod
    async def list_nodes(self, seen_since_ms: int) -> list[NodeInfo]:
        """The nodes whose last heartbeat is at or after ``seen_since_ms``, by id."""

    @abstractmethod
    async def remove_node(self, node_id: str) -> None:
        """Forget a node (it stopped gracefully)."""

    @abstractmethod
    async def topic_activity(self, since_ms: int) -> list[TopicActivity]:
        """Every public and private topic (not direct conversations) by name, with its
        member count and how many of its messages were stored at or after ``since_ms``."""

    @abstractmethod
    async def pending_backlog(self, limit: int) -> list[UserBacklog]:
        """Users with pending messages, the largest backlog first, at most ``limit``."""


def open_store(url: str) -> Store:
    """The backend for a database URL (the only place that maps URLs to stores)."""
    from topichub.store.sql import SqlStore

    return SqlStore(url)
