"""Client actions of PROTOCOL.md ("Client actions and their replies") as a tagged union.

Every action keeps ``action`` exactly as the client spelled it (``suscribe`` stays
``suscribe`` in the reply) and the optional ``ref`` to echo.
"""

from __future__ import annotations

from dataclasses import dataclass

Ref = str | int | None
ClientId = str | int | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    action: str
    ref: Ref
    topic_name: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    action: str
    ref: Ref
    topic_name: str


@dataclass(frozen=True, slots=True)
class Create:
    action: str
    ref: Ref
    topic_name: str
    is_private: bool


@dataclass(frozen=True, slots=True)
class Invite:
    action: str
    ref: Ref
    topic_name: str
    username: str


@dataclass(slots=True)  # not frozen: one per publish, and frozen makes __init__ 3x dearer
class Publish:
    """The ``message`` action. ``content`` is the content's JSON text."""

    action: str
    ref: Ref
    topic_name: str
    content: str
    client_id: ClientId


@dataclass(frozen=True, slots=True)
class ListTopics:
    action: str
    ref: Ref


@dataclass(frozen=True, slots=True)
class History:
    action: str
    ref: Ref
    topic_name: str
    before: int | None
    since: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class Ack:
    action: str
    ref: Ref
    topic_name: str
    seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    action: str
    ref: Ref


@dataclass(frozen=True, slots=True)
class Disconnect:
    action: str
    ref: Ref


Action = (
    Subscribe
    | Unsubscribe
    | Create
    | Invite
    | Publish
    | ListTopics
    | History
    | Ack
    | Ping
    | Disconnect
)


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that could not become an action; ``action``/``ref``/``topic_name`` are kept
    when known."""

    error: Exception
    action: str | None = None
    ref: Ref = None
    topic_name: str | None = None
