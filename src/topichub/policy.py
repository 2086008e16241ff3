"""Who may do what: every permission rule of topichub, as pure predicates.

Both edges reach these only through :mod:`topichub.services`, so the WebSocket gateway and
the REST API cannot disagree. Rules follow PROTOCOL.md, "Client actions and their replies".
"""

from __future__ import annotations

from topichub.models import Membership, Role, Topic, TopicKind, User


def may_subscribe(topic: Topic, membership: Membership | None) -> bool:
    """Anyone may join a public topic; a private one only by invitation."""
    return topic.kind is TopicKind.PUBLIC or membership is not None


def may_invite(inviter_membership: Membership | None) -> bool:
    """Only a member may invite (to a public or a private topic)."""
    return inviter_membership is not None


def may_publish(membership: Membership | None) -> bool:
    """Only members publish to a topic (direct conversations: both users are members)."""
    return membership is not None


def may_read(topic: Topic, membership: Membership | None, user: User) -> bool:
    """History and details: public topics to anyone; private ones to members (and admins)."""
    if topic.kind is TopicKind.PUBLIC:
        return True
    if topic.kind is TopicKind.DIRECT:
        return membership is not None
    return membership is not None or user.is_admin


def may_delete_topic(topic: Topic, membership: Membership | None, user: User) -> bool:
    return user.is_admin or (membership is not None and membership.role is Role.OWNER)


def may_remove_member(actor: User, actor_membership: Membership | None, target: User) -> bool:
    """A member may leave; the owner or an admin may remove anyone."""
    if actor.id == target.id or actor.is_admin:
        return True
    return actor_membership is not None and actor_membership.role is Role.OWNER


def may_delete_user(actor: User, target: User) -> bool:
    return actor.id == target.id or actor.is_admin


def may_administer(user: User) -> bool:
    """The admin view (server-wide statistics) is for admins only."""
    return user.is_admin
