"""The in-process broker: one node, events go straight to its handler."""

from __future__ import annotations

from topichub.broker.base import Broker, BrokerEvent, EventHandler
from topichub.errors import Unavailable


class MemoryBroker(Broker):
    def __init__(self) -> None:
        self._handler: EventHandler | None = None

    async def start(self, handler: EventHandler) -> None:
        self._handler = handler

    async def publish(self, event: BrokerEvent) -> None:
        if self._handler is None:
            raise Unavailable("the broker is not running")
        self._handler(event)

    async def ping(self) -> None:
        if self._handler is None:
            raise Unavailable("the broker is not running")

    async def close(self) -> None:
        self._handler = None
