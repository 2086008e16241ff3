"""The node's registry of local connections, and the fan-out of broker events to them.

Each message event is encoded once per topic (once per side of a direct conversation) and
the same bytes are handed to every member connection on this node.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from topichub.broker.base import (
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    TopicDeleted,
    UserDeleted,
)
from topichub.errors import CloseCode
from topichub.gateway.connection import Connection
from topichub.observability import Metrics
from topichub.wire.events import invited_event, message_event


class Hub:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.by_topic: defaultdict[int, set[Connection]] = defaultdict(set)
        # Connections stay listed under their user until their final cursor flush is done,
        # so the user's next connection can wait for it (see CursorFlusher.flush_user).
        self.by_user: defaultdict[str, set[Connection]] = defaultdict(set)

    def connections(self) -> list[Connection]:
        return [conn for conns in self.by_user.values() for conn in conns]

    def add_user(self, conn: Connection) -> None:
        """From now on membership changes and direct messages reach ``conn``."""
        self.by_user[conn.username].add(conn)
        self.metrics.connections.inc()

    def add_topics(self, conn: Connection, topic_ids: list[int]) -> None:
        for topic_id in topic_ids:
            conn.topic_ids.add(topic_id)
            self.by_topic[topic_id].add(conn)

    def stop_routing(self, conn: Connection) -> None:
        """No more events reach ``conn``; it stays listed under its user until forgotten."""
        for topic_id in conn.topic_ids:
            conns = self.by_topic.get(topic_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.by_topic[topic_id]
        conn.topic_ids.clear()

    def forget(self, conn: Connection) -> None:
        self.stop_routing(conn)
        conns = self.by_user.get(conn.username)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self.metrics.connections.dec()
            if not conns:
                del self.by_user[conn.username]

    # -- broker events --------------------------------------------------------------------

    def handle(self, event: BrokerEvent) -> None:
        match event:
            case MessagePublished(record=record):
                self.metrics.published.inc()
                delivered = 0
                if record.direct_pair is None:
                    data = message_event(record, "")
                    for conn in self.by_topic.get(record.topic_id, ()):
                        delivered += conn.deliver(record.topic_id, record.seq, data)
                else:
                    for username in set(record.direct_pair):
                        data = message_event(record, username)
                        for conn in self.by_user.get(username, ()):
                            delivered += conn.deliver(record.topic_id, record.seq, data)
                self.metrics.deliveries.inc(delivered)
            case MembershipChanged(topic_id=topic_id, joined=True):
                invite = (
                    invited_event(event.topic_name, event.invited_by) if event.invited_by else None
                )
                for conn in self.by_user.get(event.username, ()):
                    if not conn.open:
                        continue
                    conn.topic_ids.add(topic_id)
                    self.by_topic[topic_id].add(conn)
                    if invite is not None:
                        conn.send(invite)
            case MembershipChanged(topic_id=topic_id, joined=False):
                for conn in self.by_user.get(event.username, ()):
                    conn.topic_ids.discard(topic_id)
                    conns = self.by_topic.get(topic_id)
                    if conns is not None:
                        conns.discard(conn)
            case TopicDeleted(topic_id=topic_id):
                for conn in self.by_topic.pop(topic_id, set()):
                    conn.topic_ids.discard(topic_id)
            case UserDeleted(username=username):
                for conn in list(self.by_user.get(username, ())):
                    conn.open = False
                    self.stop_routing(conn)
                    asyncio.get_running_loop().create_task(
                        conn.ws.close(CloseCode.POLICY_VIOLATION, "account deleted")
                    )
