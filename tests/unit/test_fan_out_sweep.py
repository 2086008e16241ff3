"""A topic with more connections than ``SWEEP_CHUNK`` is written a chunk per loop iteration
(a sweep that goes round its connections), and the node runs between the chunks; who gets
a message is still decided when it is handed out. Real connections on real socket pairs,
driven by asyncio's own transports, behind a real hub; ``await asyncio.sleep(0)`` lets the
loop run exactly one iteration.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tests.unit.loopback import open_connection, read_frames, whole_frames
from topichub.broker.base import MembershipChanged, MessagePublished
from topichub.gateway.connection import Connection
from topichub.gateway.hub import SWEEP_CHUNK, Hub
from topichub.models import MessageRecord, Topic, TopicKind
from topichub.observability import Metrics
from topichub.wire.events import message_event

TOPIC = Topic(7, "news", TopicKind.PUBLIC, None, 0, 0)
OTHER = Topic(8, "sports", TopicKind.PUBLIC, None, 0, 0)
SUBSCRIBERS = 3 * SWEEP_CHUNK + 5  # four chunks, the last a short one


class NoStore:
    """Nothing here reads the store: every message arrives in order."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected store call: {name}")


def record(seq: int, topic: Topic = TOPIC) -> MessageRecord:
    return MessageRecord(topic.id, topic.name, seq, "writer", f'"message {seq}"', 0)


def payload(seq: int, topic: Topic = TOPIC) -> bytes:
    return message_event(record(seq, topic), "")


class Session:
    """What the server does when a connection ends: no more events reach it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def connection_ended(self, conn: Connection) -> None:
        self.hub.stop_routing(conn)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected session call: {name}")


class Node:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.hub = Hub(self.metrics, NoStore())  # type: ignore[arg-type]
        self.peers: dict[Connection, socket.socket] = {}

    async def subscriber(
        self, topics: tuple[Topic, ...] = (TOPIC,), cls: type[Connection] = Connection
    ) -> Connection:
        conn, peer = await open_connection(
            self.hub.coalescer, f"reader{len(self.peers)}", Session(self.hub), cls
        )
        peer.setblocking(False)
        self.peers[conn] = peer
        self.hub.add_user(conn)
        self.hub.add_topics(conn, list(topics))
        return conn

    def publish(self, seq: int, topic: Topic = TOPIC) -> None:
        self.hub.handle(MessagePublished(record(seq, topic)))

    def written(self, seq: int, topic: Topic = TOPIC) -> list[Connection]:
        return [conn for conn in self.peers if conn.sent_seq.get(topic.id, 0) >= seq]

    async def received(self, conn: Connection, count: int) -> list[bytes]:
        """The payloads ``conn``'s peer has read once it has ``count`` of them (or a few
        iterations more, to show that nothing else comes)."""
        data, deadline = b"", asyncio.get_running_loop().time() + 5
        while len(read_frames(data[: whole_frames(data)])) < count:
            assert asyncio.get_running_loop().time() < deadline, data
            data += self._read(conn)
            await asyncio.sleep(0.001)
        for _ in range(3):
            await asyncio.sleep(0)
            data += self._read(conn)
        return read_frames(data)

    def _read(self, conn: Connection) -> bytes:
        try:
            return self.peers[conn].recv(1 << 16)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        for conn, peer in self.peers.items():
            if conn.transport is not None:
                conn.transport.abort()
            peer.close()


async def node_with_subscribers() -> tuple[Node, list[Connection]]:
    node = Node()
    conns = [await node.subscriber() for _ in range(SUBSCRIBERS)]
    return node, conns


async def test_a_big_fan_out_is_written_a_chunk_per_loop_iteration() -> None:
    node, conns = await node_with_subscribers()
    node.publish(1)
    await asyncio.sleep(0)  # the coalescer's flush: the first chunk
    assert len(node.written(1)) == SWEEP_CHUNK
    await asyncio.sleep(0)
    assert len(node.written(1)) == 2 * SWEEP_CHUNK
    for _ in range(2):
        await asyncio.sleep(0)
    assert len(node.written(1)) == SUBSCRIBERS
    for conn in conns:
        assert await node.received(conn, 1) == [payload(1)]
    assert node.metrics.fan_out.deliveries == SUBSCRIBERS
    node.close()


async def test_who_gets_a_message_is_decided_when_it_is_handed_out() -> None:
    node, conns = await node_with_subscribers()
    node.publish(1)
    await asyncio.sleep(0)
    not_reached = [conn for conn in conns if conn not in node.written(1)]
    leaving = not_reached[-1]  # a member when the message was sent, leaves before its turn
    node.hub.handle(MembershipChanged(TOPIC.id, TOPIC.name, leaving.username, joined=False))
    joining = await node.subscriber()  # joins after it was sent
    assert await node.received(leaving, 1) == [payload(1)]
    assert await node.received(joining, 0) == []
    node.publish(2)
    assert await node.received(joining, 1) == [payload(2)]
    assert await node.received(leaving, 0) == []  # no longer a member
    node.close()


async def test_the_next_message_queues_behind_the_unfinished_one() -> None:
    node, conns = await node_with_subscribers()
    node.publish(1)
    await asyncio.sleep(0)
    node.publish(2)  # handed out while 1 has reached only the first chunk
    for conn in conns:
        assert await node.received(conn, 2) == [payload(1), payload(2)]
    cursors = {update.seq for conn in conns for update in conn.take_cursor_updates()}
    assert cursors == {2}
    assert node.metrics.fan_out.deliveries == 2 * SUBSCRIBERS
    node.close()


async def test_a_connection_gone_before_its_turn_keeps_the_message_pending() -> None:
    node, conns = await node_with_subscribers()
    node.publish(1)
    await asyncio.sleep(0)
    gone = [conn for conn in conns if conn not in node.written(1)][-1]
    assert gone.transport is not None
    gone.transport.abort()  # the socket dies between two chunks
    for _ in range(4):
        await asyncio.sleep(0)
    assert not gone.open and gone not in node.hub.by_topic[TOPIC.id]  # its end was seen
    assert gone.sent_seq.get(TOPIC.id, 0) == 0
    assert gone.take_cursor_updates() == []  # its cursor stays: 1 is pending for next time
    assert len(node.written(1)) == SUBSCRIBERS - 1
    assert node.metrics.fan_out.deliveries == SUBSCRIBERS - 1
    node.close()


async def test_messages_that_keep_coming_reach_everyone_once_and_in_order() -> None:
    node, conns = await node_with_subscribers()
    seq = 0
    for iterations in [0, 1, 0, 2, 3, 1, 5, 0, 0, 4, 7, 1, 2, 9, 0, 3] * 3:
        seq += 1
        node.publish(seq)  # handed out after 0-9 chunks of the ones before
        for _ in range(iterations):
            await asyncio.sleep(0)
    for conn in conns:
        assert await node.received(conn, seq) == [payload(n) for n in range(1, seq + 1)]
    assert node.metrics.fan_out.deliveries == seq * SUBSCRIBERS
    assert not node.hub._sweeps  # done: one lap after the last message
    node.close()


async def test_two_big_topics_share_the_loop_chunk_by_chunk() -> None:
    node = Node()
    conns = [await node.subscriber((TOPIC, OTHER)) for _ in range(SUBSCRIBERS)]
    node.publish(1)
    node.publish(1, OTHER)
    await asyncio.sleep(0)  # a chunk of each, neither written in one pass
    assert len(node.written(1)) == len(node.written(1, OTHER)) == SWEEP_CHUNK
    for seq in range(2, 7):
        node.publish(seq, OTHER if seq % 2 else TOPIC)
        node.publish(seq, TOPIC if seq % 2 else OTHER)
        for _ in range(seq % 3):
            await asyncio.sleep(0)
    for conn in conns:
        frames = await node.received(conn, 12)
        # each topic in order (PROTOCOL.md promises no order between topics)
        assert [f for f in frames if b'"news"' in f] == [payload(n) for n in range(1, 7)]
        assert [f for f in frames if b'"sports"' in f] == [payload(n, OTHER) for n in range(1, 7)]
    assert node.metrics.fan_out.deliveries == 12 * SUBSCRIBERS
    node.close()


class BrokenOnce(Connection):
    """A connection whose first live write fails, as a bug in one would."""

    def write_live(self, topic_id: int, seq: int, frame: bytes) -> bool:
        if not getattr(self, "failed", False):
            self.failed = True
            raise RuntimeError("one connection's bug")
        return super().write_live(topic_id, seq, frame)


async def test_a_chunk_that_fails_does_not_stop_the_sweep() -> None:
    node = Node()
    conns = [await node.subscriber() for _ in range(SUBSCRIBERS)]
    conns.append(await node.subscriber(cls=BrokenOnce))
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    node.publish(1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert [str(context.get("exception")) for context in errors] == ["one connection's bug"]
    assert len(node.written(1)) >= SUBSCRIBERS + 1 - SWEEP_CHUNK  # the other chunks went on
    node.publish(2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not node.hub._sweeps  # it went round and ended
    for conn in conns:  # the failed chunk's connections after the broken one missed 1
        assert await node.received(conn, 1) in ([payload(1), payload(2)], [payload(2)])
    node.close()
