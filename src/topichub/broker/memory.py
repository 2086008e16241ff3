"""The in-process broker.

``memory://`` gives each node a private bus (one node, events go straight to its handler).
``memory://NAME`` joins the bus of that name inside this process, so several nodes in one
process (tests, embedding) behave like nodes sharing a Redis channel.
"""

from __future__ import annotations

import uuid
import weakref
from urllib.parse import urlsplit

from topichub.broker.base import Broker, BrokerEvent, EventHandler, ResyncHandler
from topichub.errors import Unavailable

_buses: weakref.WeakValueDictionary[str, _Bus] = weakref.WeakValueDictionary()


class _Bus:
    def __init__(self) -> None:
        self.members: list[MemoryBroker] = []


class MemoryBroker(Broker):
    def __init__(self, url: str = "memory://") -> None:
        name = urlsplit(url).netloc or f"private-{uuid.uuid4().hex}"
        bus = _buses.get(name)
        if bus is None:
            bus = _buses[name] = _Bus()
        self._bus = bus
        self._handler: EventHandler | None = None

    async def start(self, handler: EventHandler, resync: ResyncHandler | None = None) -> None:
        self._handler = handler
        self._bus.members.append(self)

    def publish(self, event: BrokerEvent) -> None:
        if self._handler is None:
            raise Unavailable("the broker is not running")
        self._handler(event)  # this node first
        members = self._bus.members
        if len(members) > 1:  # nodes sharing the bus in this process
            for other in list(members):
                if other is not self and other._handler is not None:
                    other._handler(event)

    async def ping(self) -> None:
        if self._handler is None:
            raise Unavailable("the broker is not running")

    async def close(self) -> None:
        self._handler = None
        if self in self._bus.members:
            self._bus.members.remove(self)
