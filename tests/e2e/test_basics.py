"""The seed's flow end to end: connect, subscribe, publish, receive, disconnect."""

from __future__ import annotations

from tests.conftest import Harness


async def test_connect_subscribe_publish_receive(hub: Harness, connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a = await connect(alice)
    b = await connect(bob)
    assert a.hello == {"event": "connected", "username": alice.username, "pending": 0}

    reply = await b.request("suscribe", topic_name=topic)
    assert reply == {"action": "suscribe", "result": "ok", "topic_name": topic, "ref": reply["ref"]}

    reply = await a.request("message", topic_name=topic, content={"text": "hola"}, id="m1")
    assert reply["result"] == "ok" and reply["seq"] == 1 and reply["id"] == "m1"

    for client in (a, b):
        event = await client.next_event()
        assert event["event"] == "message"
        assert event["topic_name"] == topic
        assert event["from"] == alice.username
        assert event["content"] == {"text": "hola"}
        assert event["seq"] == 1
        assert event["direct"] is False and event["pending"] is False
        assert event["sent_at"].endswith("Z") and len(event["sent_at"]) == 24

    reply = await b.request("disconnect")
    assert reply["result"] == "ok"
    await b.ws.wait_closed()
    assert b.ws.close_code == 1000


async def test_pending_after_reconnect(hub: Harness, connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    b = await connect(bob)
    assert (await b.request("subscribe", topic_name=topic))["result"] == "ok"
    await b.request("disconnect")
    await b.ws.wait_closed()

    a = await connect(alice)
    for i in range(3):
        assert (await a.request("message", topic_name=topic, content=i))["seq"] == i + 1

    b2 = await connect(bob)
    assert b2.hello["pending"] == 3
    events = await b2.events(3)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert all(e["pending"] for e in events)
    assert [e["content"] for e in events] == [0, 1, 2]

    # Live traffic after the replay is not pending.
    await a.request("message", topic_name=topic, content="live")
    event = await b2.next_event()
    assert event["seq"] == 4 and event["pending"] is False
