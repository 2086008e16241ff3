"""Three nodes, one PostgreSQL database, one Redis channel: everything crosses nodes."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.timeout(180)


async def test_topics_invites_and_direct_messages_cross_nodes(cluster: Cluster) -> None:
    alice, bob, carol = cluster.account(), cluster.account(1), cluster.account(2)
    a0 = await cluster.connect(alice, 0)
    b1 = await cluster.connect(bob, 1)
    b2 = await cluster.connect(bob, 2)  # bob is on two nodes at once
    c2 = await cluster.connect(carol, 2)
    clients = [a0, b1, b2, c2]
    try:
        # A private topic made on node 0; the invitee is connected to nodes 1 and 2.
        assert (await a0.request("create", topic_name="secret", is_private=True))["result"] == "ok"
        reply = await a0.request("invite", topic_name="secret", username=bob.username)
        assert reply["result"] == "ok", reply
        for client in (b1, b2):
            assert await client.next_event() == {
                "event": "invited",
                "topic_name": "secret",
                "by": alice.username,
            }
        # The invite took effect at once on the other nodes: the next message arrives.
        reply = await a0.request("message", topic_name="secret", content="for bob")
        assert reply["seq"] == 1
        for client in (a0, b1, b2):
            event = await client.next_event()
            assert (event["topic_name"], event["seq"], event["content"]) == ("secret", 1, "for bob")

        # A public topic: subscribed on node 2, published on node 1.
        assert (await c2.request("create", topic_name="town"))["result"] == "ok"
        assert (await b1.request("subscribe", topic_name="town"))["result"] == "ok"
        assert (await b1.request("message", topic_name="town", content="hi all"))["seq"] == 1
        for client in (b1, b2, c2):
            event = await client.next_event()
            assert (event["topic_name"], event["from"], event["seq"]) == ("town", bob.username, 1)

        # A direct message from node 2 to a user on node 0 (and carol's own connection).
        reply = await c2.request("message", topic_name=alice.username, content="psst")
        assert reply["result"] == "ok" and reply["seq"] == 1
        event = await a0.next_event()
        assert (event["topic_name"], event["from"], event["direct"]) == (
            carol.username,
            carol.username,
            True,
        )
        echo = await c2.next_event()
        assert (echo["topic_name"], echo["direct"]) == (alice.username, True)

        # Leaving on node 1 stops delivery on node 2 too.
        assert (await b1.request("unsubscribe", topic_name="town"))["result"] == "ok"
        await c2.request("message", topic_name="town", content="bob left")
        assert (await c2.next_event())["seq"] == 2
        await a0.request("message", topic_name="secret", content="still here")
        for client in (b1, b2):  # the next thing bob sees is the private topic, not town
            event = await client.next_event()
            assert (event["topic_name"], event["seq"]) == ("secret", 2)
        assert not b1.inbox and not b2.inbox
    finally:
        for client in clients:
            await client.close()


async def test_publishes_on_every_node_reach_members_in_order(cluster: Cluster) -> None:
    """Three publishers on three nodes share one topic: every member sees 1..N in order,
    whatever order Redis delivered the events in (the hub re-orders from the store)."""
    users = [cluster.account(i) for i in range(3)]
    clients = [await cluster.connect(u, i) for i, u in enumerate(users)]
    try:
        await clients[0].request("create", topic_name="busy")
        for client in clients[1:]:
            assert (await client.request("subscribe", topic_name="busy"))["result"] == "ok"

        per_node = 60

        async def publish(client, node: int) -> None:
            for n in range(per_node):
                await client.send(
                    {
                        "action": "message",
                        "topic_name": "busy",
                        "content": [node, n],
                        "ref": f"{node}-{n}",
                    }
                )

        await asyncio.gather(*(publish(c, i) for i, c in enumerate(clients)))
        total = per_node * 3
        for client in clients:
            seqs = []
            while len(seqs) < total:
                frame = await client.next_event(seconds=20)
                if frame.get("event") == "message":
                    seqs.append(frame["seq"])
                else:
                    assert frame.get("result") == "ok", frame
            assert seqs == list(range(1, total + 1))
    finally:
        for client in clients:
            await client.close()
