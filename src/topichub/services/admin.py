"""What the admin view shows: this node's metrics and recent errors, every live node's
connections (from their heartbeats), topics with member counts and message rates, and the
pending backlog per user."""

from __future__ import annotations

import time
from dataclasses import dataclass

from topichub import policy
from topichub.errors import Forbidden
from topichub.models import NodeInfo, TopicActivity, User, UserBacklog
from topichub.observability import ErrorNote, Metrics
from topichub.store.base import Store

HEARTBEAT_SECONDS = 5.0  # how often each node refreshes its row in the nodes table
NODE_STALE_SECONDS = 15.0  # a node not heard from for this long is not listed
NODE_FORGET_SECONDS = 3600.0  # rows of nodes gone this long are deleted
RATE_WINDOW_SECONDS = 60  # topics' message rates count the messages of the last minute
BACKLOG_LIMIT = 100


@dataclass(frozen=True, slots=True)
class AdminStats:
    node_id: str  # the node that answered
    at_ms: int
    nodes: list[NodeInfo]
    metrics: dict[str, float]
    errors_by_code: dict[str, float]
    recent_errors: list[ErrorNote]  # newest first
    topics: list[TopicActivity]
    backlog: list[UserBacklog]


class AdminService:
    def __init__(self, store: Store, metrics: Metrics, node_id: str) -> None:
        self.store = store
        self.metrics = metrics
        self.node_id = node_id

    async def stats(self, actor: User) -> AdminStats:
        if not policy.may_administer(actor):
            raise Forbidden("only admins may see the server statistics")
        now = time.time_ns() // 1_000_000
        nodes = await self.store.list_nodes(now - int(NODE_STALE_SECONDS * 1000))
        topics = await self.store.topic_activity(now - RATE_WINDOW_SECONDS * 1000)
        backlog = await self.store.pending_backlog(BACKLOG_LIMIT)
        values, errors = self.metrics.snapshot()
        return AdminStats(
            node_id=self.node_id,
            at_ms=now,
            nodes=nodes,
            metrics=values,
            errors_by_code=errors,
            recent_errors=list(reversed(self.metrics.recent_errors)),
            topics=topics,
            backlog=backlog,
        )
