"""Server-wide statistics for admins (the web console's admin view)."""

from __future__ import annotations

from fastapi import APIRouter

from topichub.api.deps import Context, CurrentUser
from topichub.api.schemas import (
    ERRORS,
    AdminStatsOut,
    BacklogOut,
    ErrorNoteOut,
    NodeOut,
    TopicStatsOut,
)
from topichub.wire.events import format_timestamp

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/stats", responses=ERRORS)
async def stats(ctx: Context, actor: CurrentUser) -> AdminStatsOut:
    """Connections per node, topics with member counts and message rates, the pending
    backlog per user, and this node's metrics and recent errors. Admins only (403)."""
    found = await ctx.services.admin.stats(actor)
    return AdminStatsOut(
        node_id=found.node_id,
        generated_at=format_timestamp(found.at_ms),
        connections=sum(node.connections for node in found.nodes),
        nodes=[
            NodeOut(
                node_id=n.node_id,
                ws_address=n.ws_address,
                api_address=n.api_address,
                version=n.version,
                started_at=format_timestamp(n.started_at_ms),
                seen_at=format_timestamp(n.seen_at_ms),
                connections=n.connections,
                users=n.users,
            )
            for n in found.nodes
        ],
        metrics=found.metrics,
        errors_by_code=found.errors_by_code,
        recent_errors=[
            ErrorNoteOut(
                at=format_timestamp(e.at_ms), code=e.code, message=e.message, source=e.source
            )
            for e in found.recent_errors
        ],
        topics=[
            TopicStatsOut(
                topic_name=t.name,
                is_private=t.is_private,
                owner=t.owner,
                members=t.members,
                last_seq=t.last_seq,
                messages_last_minute=t.recent,
            )
            for t in found.topics
        ],
        pending=[
            BacklogOut(username=b.username, messages=b.messages, topics=b.topics)
            for b in found.backlog
        ],
    )
