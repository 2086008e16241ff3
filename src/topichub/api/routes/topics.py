"""Topics, members and topic messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from topichub.api.deps import Context, CurrentUser
from topichub.api.schemas import (
    ERRORS,
    PUBLISH_ERRORS,
    MemberOut,
    MembershipOut,
    MessageOut,
    MessagesOut,
    PublishIn,
    PublishOut,
    TopicIn,
    TopicOut,
    TopicSummaryOut,
)
from topichub.wire.codec import MAX_SEQ
from topichub.wire.events import format_timestamp

router = APIRouter(prefix="/api/v1/topics", tags=["topics"])


@router.get("", responses=ERRORS)
async def list_topics(ctx: Context, actor: CurrentUser) -> list[TopicSummaryOut]:
    """Public topics and the private ones you belong to."""
    return [
        TopicSummaryOut(
            topic_name=s.name,
            is_private=s.is_private,
            owner=s.owner,
            members=s.members,
            member=s.member,
        )
        for s in await ctx.services.topics.list(actor)
    ]


@router.post("", status_code=status.HTTP_201_CREATED, responses=ERRORS)
async def create_topic(body: TopicIn, ctx: Context, actor: CurrentUser) -> TopicOut:
    """Create a topic; you become its owner and first member."""
    await ctx.services.topics.create(actor, body.topic_name, is_private=body.is_private)
    return await get_topic(body.topic_name, ctx, actor)


@router.get("/{topic_name}", responses=ERRORS)
async def get_topic(topic_name: str, ctx: Context, actor: CurrentUser) -> TopicOut:
    details = await ctx.services.topics.details(actor, topic_name)
    topic = details.topic
    return TopicOut(
        topic_name=topic.name,
        is_private=topic.is_private,
        owner=topic.owner,
        last_seq=topic.last_seq,
        created_at=format_timestamp(topic.created_at_ms),
        members=[MemberOut(username=u, role=r.value) for u, r in details.members],
    )


@router.delete("/{topic_name}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_topic(topic_name: str, ctx: Context, actor: CurrentUser) -> None:
    """Delete a topic and its log (owner or admin)."""
    await ctx.services.topics.delete(actor, topic_name)


@router.put("/{topic_name}/members/{username}", responses=ERRORS)
async def add_member(
    topic_name: str, username: str, ctx: Context, actor: CurrentUser
) -> MembershipOut:
    """Your own name subscribes you; another name invites that user."""
    if username == actor.username:
        await ctx.services.topics.subscribe(actor, topic_name)
    else:
        await ctx.services.topics.invite(actor, topic_name, username)
    return MembershipOut(topic_name=topic_name, username=username)


@router.delete(
    "/{topic_name}/members/{username}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS
)
async def remove_member(topic_name: str, username: str, ctx: Context, actor: CurrentUser) -> None:
    """Leave (your own name) or remove a member (owner or admin)."""
    await ctx.services.topics.remove_member(actor, topic_name, username)


@router.post(
    "/{topic_name}/messages", status_code=status.HTTP_201_CREATED, responses=PUBLISH_ERRORS
)
async def publish(topic_name: str, body: PublishIn, ctx: Context, actor: CurrentUser) -> PublishOut:
    """Publish as the caller: live to connected members, pending for the others."""
    published = await ctx.services.messages.publish(actor, topic_name, body.content_json(), body.id)
    return PublishOut(
        topic_name=topic_name,
        seq=published.record.seq,
        id=body.id,
        duplicate=published.duplicate,
    )


@router.get("/{topic_name}/messages", responses=ERRORS)
async def history(
    topic_name: str,
    ctx: Context,
    actor: CurrentUser,
    before: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> MessagesOut:
    """History, oldest first: with ``since`` alone the oldest ``limit`` after it, otherwise
    the newest ``limit``. Over 100 is cut to 100."""
    records = await ctx.services.messages.history(
        actor, topic_name, before=before, since=since, limit=min(limit, 100)
    )
    return MessagesOut(
        topic_name=topic_name,
        messages=[MessageOut.of(r, actor.username, pending=False) for r in records],
    )
