"""The store's admin-view methods (store/base.py, "nodes and the admin view") on SQLite and
PostgreSQL: node heartbeats, topic activity and the pending backlog."""

from __future__ import annotations

import pytest

from topichub.models import NodeInfo, Role, Topic, TopicKind, User
from topichub.store.base import AppendRequest, CursorUpdate, Store
from topichub.store.sql import now_ms

pytestmark = pytest.mark.timeout(120)


def node(node_id: str, seen_at: int, connections: int = 0) -> NodeInfo:
    return NodeInfo(node_id, "h:5000", "h:5001", "0.1.0", seen_at - 1000, seen_at, connections, 0)


async def test_heartbeats_upsert_list_recent_and_forget(store: Store) -> None:
    now = now_ms()
    await store.heartbeat(node("a", now - 60_000, 1), forget_before_ms=0)
    await store.heartbeat(node("b", now, 2), forget_before_ms=0)
    assert [n.node_id for n in await store.list_nodes(now - 15_000)] == ["b"]
    assert [n.node_id for n in await store.list_nodes(0)] == ["a", "b"]

    await store.heartbeat(node("a", now, 5), forget_before_ms=0)  # an update, not a new row
    listed = await store.list_nodes(now - 15_000)
    assert [(n.node_id, n.connections) for n in listed] == [("a", 5), ("b", 2)]
    assert listed[0] == node("a", now, 5)

    await store.heartbeat(node("old", now - 7_200_000), forget_before_ms=0)
    await store.heartbeat(node("b", now + 1, 2), forget_before_ms=now - 3_600_000)
    assert [n.node_id for n in await store.list_nodes(0)] == ["a", "b"]  # "old" forgotten

    await store.remove_node("a")
    await store.remove_node("nobody")
    assert [n.node_id for n in await store.list_nodes(0)] == ["b"]


async def user(store: Store, name: str) -> User:
    return await store.create_user(name, "$argon2id$not-a-real-hash", False)


async def test_topic_activity_and_pending_backlog(store: Store) -> None:
    alice, bob, carol = [await user(store, n) for n in ("alice", "bob", "carol")]
    news = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    secret = await store.create_topic("secret", TopicKind.PRIVATE, alice.id)
    direct = await store.get_or_create_direct(alice, bob)
    for member in (bob, carol):
        await store.add_member(news.id, member.id, Role.MEMBER)
    await store.add_member(secret.id, bob.id, Role.MEMBER)

    def append(topic: Topic, sender: User) -> AppendRequest:
        return AppendRequest(topic, sender.id, sender.username, '"x"', None)

    start = now_ms()
    for _ in range(3):
        await store.append(append(news, alice))
    await store.append(append(news, bob))
    await store.append(append(secret, alice))
    await store.append(append(direct, alice))
    await store.advance_cursors([CursorUpdate(carol.id, news.id, 2)])

    activity = {t.name: t for t in await store.topic_activity(start)}
    assert set(activity) == {"news", "secret"}  # no direct conversation
    assert (activity["news"].members, activity["news"].last_seq, activity["news"].recent) == (
        3,
        4,
        4,
    )
    assert activity["news"].is_private is False and activity["news"].owner == "alice"
    assert (activity["secret"].is_private, activity["secret"].members) == (True, 2)
    assert (await store.topic_activity(now_ms() + 60_000))[0].recent == 0

    backlog = await store.pending_backlog(10)
    # bob: news 1-3 (his own 4th is not pending), secret 1, direct 1; carol: news 3 and 4;
    # alice: bob's message in news.
    assert [(b.username, b.messages, b.topics) for b in backlog] == [
        ("bob", 5, 3),
        ("carol", 2, 1),
        ("alice", 1, 1),
    ]
    assert [b.username for b in await store.pending_backlog(1)] == ["bob"]
