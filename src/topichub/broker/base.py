"""The broker interface: "deliver this event to every node" (docs/architecture.md).

The broker only makes delivery fast; the store stays the source of truth. An event published
on one node reaches the handler of every node, the publishing node included (which gets it
first, before the event leaves the process). A broker never blocks on a slow node and never
stores events: a node that missed some (e.g. during an outage) re-syncs from the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from topichub.models import MessageRecord


@dataclass(slots=True)  # not frozen: one per message, and frozen makes __init__ 3x dearer
class MessagePublished:
    record: MessageRecord


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """``username`` joined (``joined``) or left ``topic_id``; ``invited_by`` for invites."""

    topic_id: int
    topic_name: str
    username: str
    joined: bool
    invited_by: str | None = None
    # The topic's last seq when the user joined: a node that starts following the topic
    # for this user fans out from there (an event of its own may arrive before earlier
    # ones from other nodes).
    since_seq: int | None = None


@dataclass(frozen=True, slots=True)
class TopicDeleted:
    topic_id: int


@dataclass(frozen=True, slots=True)
class UserDeleted:
    username: str


@dataclass(frozen=True, slots=True)
class Resync:
    """Events were lost between nodes: every node should re-read the store. Brokers send
    it among themselves; it never reaches a node's event handler."""


BrokerEvent = MessagePublished | MembershipChanged | TopicDeleted | UserDeleted | Resync
EventHandler = Callable[[BrokerEvent], None]
# Called when events may have been missed (e.g. after a broker reconnect): re-read the store.
ResyncHandler = Callable[[], None]


class Broker(ABC):
    @abstractmethod
    async def start(self, handler: EventHandler, resync: ResyncHandler | None = None) -> None:
        """Begin delivering every node's events (this node's included) to ``handler``.

        ``resync`` is called whenever events may have been lost in between (after a lost
        connection to other nodes), so the node can catch up from the store."""

    @abstractmethod
    def publish(self, event: BrokerEvent) -> None:
        """Hand the event to this node's handler at once, and queue it for the other nodes.

        Never waits: events to other nodes leave in publish order, in batches, from the
        broker's own sender (a publisher must not wait on the network, and a burst of
        publishes costs one round trip). Raises ``Unavailable`` once the broker is closed."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``Unavailable`` if events cannot currently reach the other nodes."""

    @abstractmethod
    async def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        """Counters for /metrics: ``connected`` (0/1), ``reconnects``, ``publish_errors``."""
        return {"connected": 1, "reconnects": 0, "publish_errors": 0}


def open_broker(url: str) -> Broker:
    """The backend for a broker URL, imported lazily."""
    if url.startswith("memory:"):
        from topichub.broker.memory import MemoryBroker

        return MemoryBroker(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from topichub.broker.redis import RedisBroker
        except ImportError as exc:
            raise RuntimeError("the Redis broker needs: pip install 'topichub[redis]'") from exc
        return RedisBroker(url)
    raise ValueError(f"unsupported broker URL {url!r} (use memory:// or redis://)")
