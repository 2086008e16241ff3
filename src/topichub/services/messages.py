"""Publishing, history, acknowledgement and the pending peek."""

from __future__ import annotations

from typing import NamedTuple

from topichub import policy
from topichub.broker.base import Broker, MessagePublished
from topichub.errors import Forbidden, InvalidRequest, NotAMember
from topichub.limits import RateLimiter, check_content_size
from topichub.models import MessageRecord, Topic, User
from topichub.services.topics import TopicService
from topichub.store.base import AppendRequest, AppendResult, Committed, Store

PENDING_PEEK_LIMIT = 1000


class Published(NamedTuple):
    record: MessageRecord
    duplicate: bool  # the client id was used before: nothing new was stored or sent


def _request(
    actor: User, topic: Topic, content_json: str, client_id: str | int | None
) -> AppendRequest:
    return AppendRequest(
        topic, actor.id, actor.username, content_json, None if client_id is None else str(client_id)
    )


class MessageService:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        topics: TopicService,
        limiter: RateLimiter,
        max_message_bytes: int,
    ) -> None:
        self.store = store
        self.broker = broker
        self.topics = topics
        self.limiter = limiter
        self.max_message_bytes = max_message_bytes

    async def publish(
        self,
        actor: User,
        name: str,
        content_json: str,
        client_id: str | int | None,
    ) -> Published:
        """Store the message, then announce it to every member (the REST edge; the
        gateway runs the two halves itself, to pipeline them)."""
        topic = await self.check(actor, name, content_json)
        stored = await self.store.submit(_request(actor, topic, content_json, client_id))
        published = Published(*stored)
        self.announce(published)
        return published

    async def check(self, actor: User, name: str, content_json: str) -> Topic:
        """The first half of a publish: the topic it goes to, if the actor may publish
        this there now; raises what refuses it."""
        check_content_size(content_json, self.max_message_bytes)
        self.limiter.check(actor.id)
        topic = await self.topics.conversation(actor, name)
        lookups = self.topics.lookups
        if not lookups.is_member(topic.id, actor.id):
            if not policy.may_publish(await self.store.get_membership(topic.id, actor.id)):
                raise NotAMember(f"subscribe to {name!r} before publishing to it")
            lookups.remember_member(topic.id, actor.id, actor.username)
        return topic

    def check_now(self, actor: User, name: str, content_json: str) -> Topic | None:
        """``check`` without a coroutine, for the common case where the node remembers the
        topic and the membership (a publisher's every message after its first); None when
        it does not, and then nothing was checked or counted: call ``check``."""
        topic = self.topics.cached_conversation(actor, name)
        if topic is None or not self.topics.lookups.is_member(topic.id, actor.id):
            return None
        check_content_size(content_json, self.max_message_bytes)
        self.limiter.check(actor.id)
        return topic

    def queue(
        self,
        actor: User,
        topic: Topic,
        content_json: str,
        client_id: str | int | None,
        committed: Committed,
    ) -> None:
        """Queue a checked publish's append, without waiting for it: ``committed`` gets
        the record after the commit, so one connection can keep several publishes in
        flight and they share a group commit (see ``Store.submit_then``)."""
        self.store.submit_then(_request(actor, topic, content_json, client_id), committed)

    def announce(self, stored: AppendResult) -> None:
        """The second half: tell every member (through the broker) of a new message; a
        duplicate (``stored`` = (record, True)) was announced the first time."""
        record, duplicate = stored
        if not duplicate:
            self.broker.publish(MessagePublished(record))

    async def readable(self, actor: User, name: str) -> Topic:
        topic = await self.topics.conversation(actor, name)
        membership = await self.store.get_membership(topic.id, actor.id)
        if not policy.may_read(topic, membership, actor):
            raise Forbidden(f"{name!r} is private")
        return topic

    async def history(
        self, actor: User, name: str, *, before: int | None, since: int | None, limit: int
    ) -> list[MessageRecord]:
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        topic = await self.readable(actor, name)
        return await self.store.history(topic, before=before, since=since, limit=min(limit, 100))

    async def ack_target(self, actor: User, name: str, seq: int) -> tuple[Topic, int]:
        """Check an ``ack`` and return the topic and the seq it may move the cursor to."""
        topic = await self.topics.conversation(actor, name)
        if await self.store.get_membership(topic.id, actor.id) is None:
            raise NotAMember(f"you are not a member of {name!r}")
        current = await self.store.get_topic(topic.name)
        last_seq = current.last_seq if current else topic.last_seq
        return topic, min(seq, last_seq)

    async def pending(self, actor: User, limit: int = PENDING_PEEK_LIMIT) -> list[MessageRecord]:
        """A peek at what the user's next connection would receive, oldest first per topic."""
        records: list[MessageRecord] = []
        for pending in await self.store.pending_ranges(actor.id):
            if len(records) >= limit:
                break
            records += await self.store.read_range(
                pending.topic,
                after=pending.after,
                upto=pending.upto,
                exclude_sender_id=actor.id,
                limit=limit - len(records),
            )
        return records
