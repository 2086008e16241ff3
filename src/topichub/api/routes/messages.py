"""Direct messages and the pending peek."""

from __future__ import annotations

from fastapi import APIRouter, status

from topichub.api.deps import Context, CurrentUser
from topichub.api.schemas import (
    ERRORS,
    PUBLISH_ERRORS,
    ConversationOut,
    MessageOut,
    MessagesOut,
    PublishIn,
    PublishOut,
)

router = APIRouter(prefix="/api/v1", tags=["messages"])


@router.post(
    "/users/{username}/messages", status_code=status.HTTP_201_CREATED, responses=PUBLISH_ERRORS
)
async def direct_message(
    username: str, body: PublishIn, ctx: Context, actor: CurrentUser
) -> PublishOut:
    """Send a direct message to a user."""
    await ctx.services.users.get(username)  # a topic of that name is not a user
    published = await ctx.services.messages.publish(actor, username, body.content_json(), body.id)
    return PublishOut(
        topic_name=username,
        seq=published.record.seq,
        id=body.id,
        duplicate=published.duplicate,
    )


@router.get("/messages/pending", responses=ERRORS)
async def pending(ctx: Context, actor: CurrentUser) -> MessagesOut:
    """What your next WebSocket connection would receive as pending (a peek: nothing is
    marked delivered; at most 1000)."""
    records = await ctx.services.messages.pending(actor)
    return MessagesOut(messages=[MessageOut.of(r, actor.username, pending=True) for r in records])


@router.get("/conversations", responses=ERRORS)
async def conversations(ctx: Context, actor: CurrentUser) -> list[ConversationOut]:
    """Your direct conversations: the other user and the newest message's seq, by name
    (``list_topics`` does not list them)."""
    return [
        ConversationOut(username=peer, last_seq=last_seq)
        for peer, last_seq in await ctx.services.topics.direct_conversations(actor)
    ]
