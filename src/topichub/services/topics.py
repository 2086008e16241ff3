"""Topics and their members."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from topichub import policy
from topichub.broker.base import Broker, MembershipChanged, TopicDeleted
from topichub.errors import AlreadyMember, Forbidden, NotAMember, NotFound
from topichub.models import Role, Topic, TopicKind, TopicSummary, User
from topichub.names import check_name, direct_topic_name, is_valid_name
from topichub.services.lookups import Lookups
from topichub.store.base import Store


@dataclass(frozen=True, slots=True)
class TopicDetails:
    topic: Topic
    members: list[tuple[str, Role]]


class TopicService:
    def __init__(self, store: Store, broker: Broker, lookups: Lookups | None = None) -> None:
        self.store = store
        self.broker = broker
        self.lookups = lookups or Lookups()

    async def get(self, name: str) -> Topic:
        """A public or private topic by name (never a direct conversation)."""
        topic = await self.store.get_topic(name) if is_valid_name(name) else None
        if topic is None or topic.kind is TopicKind.DIRECT:
            raise NotFound(f"no topic {name!r}")
        return topic

    async def conversation(self, actor: User, name: str) -> Topic:
        """What a name means as an address: the topic of that name, or the direct
        conversation with the user of that name (made on first use)."""
        if is_valid_name(name):
            cached = self.cached_conversation(actor, name)
            if cached is not None:
                return cached
            topic = await self.store.get_topic(name)
            if topic is None:
                peer = await self.store.get_user(name)
                if peer is not None:
                    topic = await self.store.get_or_create_direct(actor, peer)
            if topic is not None:
                self.lookups.remember_topic(topic)
                return topic
        raise NotFound(f"no topic or user {name!r}")

    def cached_conversation(self, actor: User, name: str) -> Topic | None:
        """``conversation`` when this node remembers the name, else None (no I/O)."""
        return self.lookups.topic(name) or self.lookups.topic(
            direct_topic_name(actor.username, name)
        )

    async def create(self, actor: User, name: str, *, is_private: bool) -> Topic:
        check_name(name, "topic_name")
        kind = TopicKind.PRIVATE if is_private else TopicKind.PUBLIC
        topic = await self.store.create_topic(name, kind, actor.id)
        self.broker.publish(
            MembershipChanged(topic.id, topic.name, actor.username, True, None, topic.last_seq)
        )
        return topic

    async def subscribe(self, actor: User, name: str) -> Topic:
        topic = await self.get(name)
        membership = await self.store.get_membership(topic.id, actor.id)
        if not policy.may_subscribe(topic, membership):
            raise Forbidden(f"{name!r} is private: ask a member to invite you")
        if membership is None:
            since = await self.store.add_member(topic.id, actor.id, Role.MEMBER)
            if since is not None:
                self.broker.publish(
                    MembershipChanged(topic.id, topic.name, actor.username, True, None, since)
                )
        return topic

    async def unsubscribe(self, actor: User, name: str) -> Topic:
        topic = await self.get(name)
        if not await self.store.remove_member(topic.id, actor.id):
            raise NotAMember(f"you are not a member of {name!r}")
        self.broker.publish(MembershipChanged(topic.id, topic.name, actor.username, False))
        return topic

    async def invite(self, actor: User, name: str, username: str) -> Topic:
        topic = await self.get(name)
        invitee = await self.store.get_user(username) if is_valid_name(username) else None
        if invitee is None:
            raise NotFound(f"no user {username!r}")
        if not policy.may_invite(await self.store.get_membership(topic.id, actor.id)):
            raise NotAMember(f"only members of {name!r} may invite")
        since = await self.store.add_member(topic.id, invitee.id, Role.MEMBER)
        if since is None:
            raise AlreadyMember(f"{username!r} is already a member of {name!r}")
        self.broker.publish(
            MembershipChanged(topic.id, topic.name, invitee.username, True, actor.username, since)
        )
        return topic

    async def remove_member(self, actor: User, name: str, username: str) -> Topic:
        topic = await self.get(name)
        target = await self.store.get_user(username) if is_valid_name(username) else None
        if target is None:
            raise NotFound(f"no user {username!r}")
        actor_membership = await self.store.get_membership(topic.id, actor.id)
        if not policy.may_remove_member(actor, actor_membership, target):
            raise Forbidden("only the owner or an admin may remove another member")
        if not await self.store.remove_member(topic.id, target.id):
            raise NotAMember(f"{username!r} is not a member of {name!r}")
        self.broker.publish(MembershipChanged(topic.id, topic.name, target.username, False))
        return topic

    async def list(self, actor: User) -> list[TopicSummary]:
        return await self.store.list_topics(actor.id)

    async def direct_conversations(self, actor: User) -> Sequence[tuple[str, int]]:
        """(the other user's name, the conversation's last seq) of each direct conversation
        the actor has, by name."""
        found: list[tuple[str, int]] = []
        for topic in await self.store.user_topics(actor.id):
            if topic.direct_pair is not None:
                first, second = topic.direct_pair
                found.append((second if actor.username == first else first, topic.last_seq))
        return sorted(found)

    async def details(self, actor: User, name: str) -> TopicDetails:
        topic = await self.get(name)
        membership = await self.store.get_membership(topic.id, actor.id)
        if not policy.may_read(topic, membership, actor):
            raise Forbidden(f"{name!r} is private")
        return TopicDetails(topic, await self.store.list_members(topic.id))

    async def delete(self, actor: User, name: str) -> None:
        topic = await self.get(name)
        membership = await self.store.get_membership(topic.id, actor.id)
        if not policy.may_delete_topic(topic, membership, actor):
            raise Forbidden("only the owner or an admin may delete a topic")
        await self.store.delete_topic(topic.id)
        self.broker.publish(TopicDeleted(topic.id))
