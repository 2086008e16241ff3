"""The broker contract, one suite run against the in-process broker and Redis
(broker/base.py). Two broker instances on one bus stand for two nodes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest

from tests.backends import redis_channel_url
from tests.proxy import TcpProxy
from topichub.broker.base import (
    Broker,
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    TopicDeleted,
    UserDeleted,
    open_broker,
)
from topichub.errors import Unavailable
from topichub.models import MessageRecord

pytestmark = pytest.mark.timeout(60)


class Node:
    """A broker with a recording handler, standing for one node."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.events: list[BrokerEvent] = []
        self.resyncs = 0
        self.arrived = asyncio.Event()

    def handle(self, event: BrokerEvent) -> None:
        self.events.append(event)
        self.arrived.set()

    def resync(self) -> None:
        self.resyncs += 1

    async def start(self) -> Node:
        await self.broker.start(self.handle, self.resync)
        return self

    async def wait_for(self, count: int, seconds: float = 10) -> list[BrokerEvent]:
        async def enough() -> None:
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), seconds)
        return self.events


@pytest.fixture(params=["memory", "redis"])
def bus_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://bus-{uuid.uuid4().hex[:8]}"
    return redis_channel_url()


@pytest.fixture
async def nodes(bus_url: str) -> AsyncIterator[Callable[[], object]]:
    started: list[Node] = []

    async def make(url: str = bus_url) -> Node:
        node = await Node(open_broker(url)).start()
        started.append(node)
        return node

    yield make
    for node in started:
        await node.broker.close()


def record(seq: int, topic_id: int = 7, content: str = '{"n": 1}') -> MessageRecord:
    return MessageRecord(topic_id, "news", seq, "alice", content, 1_795_000_000_123, "c1")


async def test_events_reach_every_node_once_and_the_publisher_first(nodes) -> None:
    a, b, c = await nodes(), await nodes(), await nodes()
    event = MessagePublished(record(1))
    a.broker.publish(event)
    assert a.events == [event]  # delivered locally before publish() returned
    for node in (b, c):
        assert await node.wait_for(1) == [event]
    await asyncio.sleep(0.2)
    assert len(a.events) == 1  # a node ignores its own echo
    assert len(b.events) == len(c.events) == 1


async def test_every_event_type_round_trips(nodes) -> None:
    a, b = await nodes(), await nodes()
    events: list[BrokerEvent] = [
        MessagePublished(record(1, content='{"nested": [1, "two", null, {"x": true}]}')),
        MessagePublished(
            MessageRecord(9, "dm:alice:bob", 3, "bob", '"hi"', 5, None, ("alice", "bob"))
        ),
        MembershipChanged(7, "news", "bob", True, "alice"),
        MembershipChanged(7, "news", "bob", False),
        TopicDeleted(7),
        UserDeleted("carol"),
    ]
    for event in events:
        a.broker.publish(event)
    assert await b.wait_for(len(events)) == events


async def test_order_from_one_publisher_is_kept(nodes) -> None:
    a, b = await nodes(), await nodes()
    for seq in range(1, 501):
        a.broker.publish(MessagePublished(record(seq)))
    received = await b.wait_for(500)
    assert [e.record.seq for e in received] == list(range(1, 501))  # type: ignore[union-attr]


async def test_ping_and_close(nodes) -> None:
    a = await nodes()
    await a.broker.ping()
    await a.broker.close()
    with pytest.raises(Unavailable):
        await a.broker.ping()
    with pytest.raises(Unavailable):
        a.broker.publish(TopicDeleted(1))


async def test_buses_are_isolated(nodes, bus_url: str) -> None:
    other_url = (
        f"memory://bus-{uuid.uuid4().hex[:8]}"
        if bus_url.startswith("memory")
        else redis_channel_url()
    )
    a, b = await nodes(), await nodes(other_url)
    a.broker.publish(TopicDeleted(1))
    await asyncio.sleep(0.3)
    assert b.events == []


async def test_redis_broker_recovers_after_its_connection_drops() -> None:
    url = redis_channel_url()
    target = urlsplit(url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    proxied = url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
    a = await Node(open_broker(proxied)).start()
    b = await Node(open_broker(url)).start()
    try:
        a.broker.publish(TopicDeleted(1))
        await b.wait_for(1)

        proxy.cut()  # a loses Redis; new connections are refused
        with pytest.raises(Unavailable):
            for _ in range(50):
                await a.broker.ping()
                await asyncio.sleep(0.1)
        # Publishing while cut is not an error (the store has the message) and still
        # reaches the local node.
        a.broker.publish(TopicDeleted(2))
        assert a.events[-1] == TopicDeleted(2)

        proxy.restore()
        for _ in range(100):
            if a.resyncs:
                break
            await asyncio.sleep(0.1)
        assert a.resyncs == 1  # told to catch up from the store
        # What a published during the outage was kept and sent on reconnect.
        assert (await b.wait_for(2))[1] == TopicDeleted(2)
        await a.broker.ping()
        b.broker.publish(TopicDeleted(3))
        await a.wait_for(3)
        assert a.events[-1] == TopicDeleted(3)
        a.broker.publish(TopicDeleted(4))
        assert (await b.wait_for(4))[-1] == TopicDeleted(4)
        assert b.events == [TopicDeleted(n) for n in (1, 2, 3, 4)]
    finally:
        await a.broker.close()
        await b.broker.close()
        await proxy.close()


async def test_an_event_redis_cannot_carry_is_dropped_and_the_others_resync() -> None:
    """A bug that makes one event unencodable must not stop the sender: the events
    around it still go, and the other nodes are told to re-read the store, where the
    message is."""
    url = redis_channel_url()
    a = await Node(open_broker(url)).start()
    b = await Node(open_broker(url)).start()
    try:
        bad = MessagePublished(record(2, content="\ud800"))  # orjson refuses lone surrogates
        for event in (MessagePublished(record(1)), bad, MessagePublished(record(3))):
            a.broker.publish(event)
        assert [e.record.seq for e in await b.wait_for(2)] == [1, 3]  # type: ignore[attr-defined]
        for _ in range(50):
            if b.resyncs:
                break
            await asyncio.sleep(0.1)
        assert b.resyncs == 1
        assert a.broker.stats()["publish_errors"] == 1  # type: ignore[attr-defined]
        a.broker.publish(TopicDeleted(9))  # and the sender goes on
        assert (await b.wait_for(3))[-1] == TopicDeleted(9)
    finally:
        await a.broker.close()
        await b.broker.close()
