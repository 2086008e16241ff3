"""Every WebSocket action of PROTOCOL.md against a real server, with its exact replies.

Also the three ways to pass the token and the 401 refusals at the handshake.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Account, Harness, unique
from topichub.testing import WsClient, timeout

Connect = Callable[..., Awaitable[WsClient]]

SENT_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


# -- helpers ---------------------------------------------------------------------------------


def assert_ok(reply: dict[str, Any], action: str, **fields: Any) -> None:
    """The exact ok reply; ``request`` already matched the ref, which must be present."""
    assert reply == {"action": action, "result": "ok", **fields, "ref": reply.get("ref")}
    assert "ref" in reply


def assert_error(reply: dict[str, Any], action: str, code: str, **fields: Any) -> None:
    message = reply.get("message")
    assert isinstance(message, str) and message, reply
    assert reply == {
        "action": action,
        "result": "error",
        "error": code,
        "message": message,
        **fields,
        "ref": reply.get("ref"),
    }
    assert "ref" in reply


def assert_message(
    event: dict[str, Any],
    *,
    topic: str,
    sender: str,
    content: Any,
    seq: int,
    direct: bool = False,
    pending: bool = False,
) -> None:
    sent_at = event.get("sent_at")
    assert isinstance(sent_at, str) and SENT_AT.fullmatch(sent_at), event
    assert event == {
        "event": "message",
        "topic_name": topic,
        "from": sender,
        "content": content,
        "seq": seq,
        "sent_at": sent_at,
        "direct": direct,
        "pending": pending,
    }


async def publish(client: WsClient, topic: str, content: Any, **fields: Any) -> int:
    reply = await client.request("message", topic_name=topic, content=content, **fields)
    assert reply["result"] == "ok", reply
    seq = reply["seq"]
    assert isinstance(seq, int)
    return seq


async def publish_many(client: WsClient, topic: str, count: int) -> list[int]:
    """Send ``count`` messages without waiting in between; return their seqs in order."""
    refs = [f"bulk-{unique()}" for _ in range(count)]
    for i, ref in enumerate(refs):
        await client.send({"action": "message", "ref": ref, "topic_name": topic, "content": i})
    seqs = []
    for ref in refs:
        reply = await client.reply(ref, seconds=30)
        assert reply["result"] == "ok", reply
        seqs.append(reply["seq"])
    return seqs


async def bye(client: WsClient) -> None:
    """A clean ``disconnect``: the server has saved the cursors once the close arrives."""
    assert_ok(await client.request("disconnect"), "disconnect")
    await client.ws.wait_closed()
    assert client.ws.close_code == 1000


async def barrier(client: WsClient) -> None:
    """Ping: every frame the server wrote to this connection before it is now read."""
    assert_ok(await client.request("ping"), "ping")


async def refused(url: str, **kwargs: Any) -> dict[str, Any]:
    """Connect, expect HTTP 401 with the JSON error body of PROTOCOL.md, "Connecting"."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, open_timeout=timeout(10), **kwargs):
            pass
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = orjson.loads(response.body)
    assert set(body) == {"error", "message"}, body
    assert body["error"] == "unauthorized"
    assert isinstance(body["message"], str) and body["message"]
    return body


def claims_of(account: Account) -> dict[str, Any]:
    claims = jwt.decode(account.token, options={"verify_signature": False})
    assert isinstance(claims, dict)
    return claims


def server_secret(hub: Harness) -> str:
    return (hub.server.data_dir / "secret").read_text().strip()


def topic_row(reply: dict[str, Any], name: str) -> dict[str, Any] | None:
    rows = [row for row in reply["topics"] if row["topic_name"] == name]
    assert len(rows) <= 1
    return rows[0] if rows else None


# -- connecting --------------------------------------------------------------------------------


async def test_token_in_the_path(hub: Harness, clients: list[WsClient]) -> None:
    alice = hub.account("alice")
    client = await WsClient.connect(f"{hub.server.ws_url}/{alice.token}")
    clients.append(client)
    assert await client.recv() == {"event": "connected", "username": alice.username, "pending": 0}
    await barrier(client)


async def test_token_in_the_query(hub: Harness, clients: list[WsClient]) -> None:
    alice = hub.account("alice")
    client = await WsClient.connect(f"{hub.server.ws_url}/ws?token={alice.token}")
    clients.append(client)
    assert await client.recv() == {"event": "connected", "username": alice.username, "pending": 0}
    await barrier(client)


async def test_token_in_an_authorization_header(hub: Harness, clients: list[WsClient]) -> None:
    alice = hub.account("alice")
    client = await WsClient.connect(
        f"{hub.server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {alice.token}"}
    )
    clients.append(client)
    assert await client.recv() == {"event": "connected", "username": alice.username, "pending": 0}
    await barrier(client)


async def test_each_form_speaks_for_its_own_user(hub: Harness, clients: list[WsClient]) -> None:
    """Three users, three forms, one topic: every frame is attributed to the right user."""
    users = [hub.account("u") for _ in range(3)]
    topic = hub.topic(users[0])
    base = hub.server.ws_url
    conns = [
        await WsClient.connect(f"{base}/{users[0].token}"),
        await WsClient.connect(f"{base}/ws?token={users[1].token}"),
        await WsClient.connect(
            f"{base}/ws", additional_headers={"Authorization": f"Bearer {users[2].token}"}
        ),
    ]
    clients.extend(conns)
    for conn, user in zip(conns, users, strict=True):
        assert (await conn.recv())["username"] == user.username
    for conn in conns[1:]:
        assert_ok(await conn.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    for i, conn in enumerate(conns):
        await publish(conn, topic, f"from {i}")
    for conn in conns:
        events = await conn.events(3)
        for i, (event, user) in enumerate(zip(events, users, strict=True)):
            assert_message(event, topic=topic, sender=user.username, content=f"from {i}", seq=i + 1)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {}),
        ("/ws", {}),
        ("/ws?token=", {}),
        ("/ws?ack=manual", {}),
        ("/ws", {"Authorization": "Basic YWxpY2U6c2VjcmV0"}),
        ("/ws", {"Authorization": "Bearer"}),
    ],
)
async def test_a_missing_token_is_refused(hub: Harness, path: str, headers: dict[str, str]) -> None:
    await refused(hub.server.ws_url + path, additional_headers=headers)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/not-a-token", {}),
        ("/a.b.c", {}),
        ("/ws?token=eyJhbGciOiJIUzI1NiJ9.e30.x", {}),
        ("/ws", {"Authorization": "Bearer garbage"}),
    ],
)
async def test_a_malformed_token_is_refused(
    hub: Harness, path: str, headers: dict[str, str]
) -> None:
    await refused(hub.server.ws_url + path, additional_headers=headers)


async def test_a_truncated_token_is_refused(hub: Harness) -> None:
    alice = hub.account("alice")
    await refused(f"{hub.server.ws_url}/{alice.token[:-3]}")


async def test_a_token_signed_with_another_secret_is_refused(hub: Harness) -> None:
    alice = hub.account("alice")
    forged = jwt.encode(claims_of(alice), "not-the-server-secret-" * 3, algorithm="HS256")
    body = await refused(f"{hub.server.ws_url}/{forged}")
    assert "expired" not in body["message"]
    await refused(f"{hub.server.ws_url}/ws?token={forged}")
    await refused(
        f"{hub.server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {forged}"}
    )


async def test_an_unsigned_token_is_refused(hub: Harness) -> None:
    alice = hub.account("alice")
    unsigned = jwt.encode(claims_of(alice), None, algorithm="none")
    await refused(f"{hub.server.ws_url}/{unsigned}")


async def test_an_expired_token_is_refused(hub: Harness, clients: list[WsClient]) -> None:
    alice = hub.account("alice")
    secret = server_secret(hub)
    now = int(time.time())
    base = {"sub": alice.username, "uid": claims_of(alice)["uid"], "jti": unique("j")}
    # Control: the same claims, signed the same way but not expired, are accepted.
    fresh = jwt.encode({**base, "iat": now, "exp": now + 600}, secret, algorithm="HS256")
    client = await WsClient.connect(f"{hub.server.ws_url}/{fresh}")
    clients.append(client)
    assert (await client.recv())["username"] == alice.username

    expired = jwt.encode({**base, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256")
    body = await refused(f"{hub.server.ws_url}/{expired}")
    assert "expired" in body["message"]
    await refused(f"{hub.server.ws_url}/ws?token={expired}")
    await refused(
        f"{hub.server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {expired}"}
    )


async def test_a_deleted_users_token_is_refused(hub: Harness, clients: list[WsClient]) -> None:
    alice = hub.account("alice")
    live = await hub.connect(alice)
    clients.append(live)
    r = hub.http.delete(f"/api/v1/users/{alice.username}", headers=hub.auth(alice))
    assert r.status_code == 204, r.text
    # The live connection of a deleted account is closed (policy violation).
    with pytest.raises(ConnectionClosed):
        await live.recv(10)
    assert live.ws.close_code == 1008
    await refused(f"{hub.server.ws_url}/{alice.token}")
    await refused(f"{hub.server.ws_url}/ws?token={alice.token}")


async def test_a_user_deleted_by_an_admin_is_refused(hub: Harness) -> None:
    bob = hub.account("bob")
    r = hub.http.delete(f"/api/v1/users/{bob.username}", headers=hub.auth(hub.admin))
    assert r.status_code == 204, r.text
    await refused(f"{hub.server.ws_url}/{bob.token}")


async def test_a_token_does_not_outlive_its_user_when_the_name_returns(
    hub: Harness, clients: list[WsClient]
) -> None:
    carol = hub.account("carol")
    r = hub.http.delete(f"/api/v1/users/{carol.username}", headers=hub.auth(carol))
    assert r.status_code == 204, r.text
    r = hub.http.post("/api/v1/users", json={"username": carol.username, "password": "other-pw-1"})
    assert r.status_code == 201, r.text
    await refused(f"{hub.server.ws_url}/{carol.token}")
    new = hub.login(carol.username, "other-pw-1")
    client = await hub.connect(new)
    clients.append(client)
    assert client.hello["username"] == carol.username  # type: ignore[attr-defined]


# -- ping, disconnect, refs -------------------------------------------------------------------


async def test_ping(hub: Harness, connect: Connect) -> None:
    client = await connect(hub.account())
    reply = await client.request("ping")
    assert reply == {"action": "ping", "result": "ok", "ref": reply["ref"]}


@pytest.mark.parametrize("ref", [0, 1, -7, 2**53, "", "r", "x" * 64, "ñ-ref"])
async def test_refs_are_echoed_unchanged(hub: Harness, connect: Connect, ref: str | int) -> None:
    client = await connect(hub.account())
    await client.send({"action": "ping", "ref": ref})
    reply = await client.recv()
    assert reply == {"action": "ping", "result": "ok", "ref": ref}
    assert type(reply["ref"]) is type(ref)


async def test_a_frame_without_ref_gets_a_reply_without_ref(hub: Harness, connect: Connect) -> None:
    client = await connect(hub.account())
    await client.send({"action": "ping"})
    assert await client.recv() == {"action": "ping", "result": "ok"}
    topic = unique("none")
    await client.send({"action": "subscribe", "topic_name": topic})
    reply = await client.recv()
    assert reply["error"] == "not_found"
    assert "ref" not in reply


async def test_disconnect_replies_then_closes_with_1000(hub: Harness, connect: Connect) -> None:
    client = await connect(hub.account())
    await client.send({"action": "disconnect", "ref": "bye"})
    assert await client.recv() == {"action": "disconnect", "result": "ok", "ref": "bye"}
    with pytest.raises(ConnectionClosed):
        await client.recv()
    assert client.ws.close_code == 1000


# -- subscribe / suscribe -------------------------------------------------------------------


async def test_subscribe_twice_is_ok_and_suscribe_is_echoed(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    b = await connect(bob)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    assert_ok(await b.request("suscribe", topic_name=topic), "suscribe", topic_name=topic)
    # Subscribed once: one membership, one copy of each message.
    a = await connect(alice)
    row = topic_row(await a.request("list_topics"), topic)
    assert row is not None and row["members"] == 2
    await publish(a, topic, "one")
    await publish(a, topic, "two")
    assert_message(await b.next_event(), topic=topic, sender=alice.username, content="one", seq=1)
    assert_message(await b.next_event(), topic=topic, sender=alice.username, content="two", seq=2)


async def test_the_owner_may_subscribe_to_its_own_private_topic(
    hub: Harness, connect: Connect
) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice, private=True)
    a = await connect(alice)
    assert_ok(await a.request("suscribe", topic_name=topic), "suscribe", topic_name=topic)


async def test_subscribe_errors(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    private = hub.topic(alice, private=True)
    b = await connect(bob)
    missing = unique("missing")
    for action in ("subscribe", "suscribe"):
        reply = await b.request(action, topic_name=missing)
        assert_error(reply, action, "not_found", topic_name=missing)
        reply = await b.request(action, topic_name=private)
        assert_error(reply, action, "forbidden", topic_name=private)
    # A username is not a topic one can subscribe to.
    reply = await b.request("subscribe", topic_name=alice.username)
    assert_error(reply, "subscribe", "not_found", topic_name=alice.username)
    # Still not a member: publishing is refused.
    reply = await b.request("message", topic_name=private, content="x")
    assert_error(reply, "message", "not_a_member", topic_name=private)


async def test_a_new_member_gets_messages_from_then_on_only(hub: Harness, connect: Connect) -> None:
    alice, bob, carol = hub.account("alice"), hub.account("bob"), hub.account("carol")
    topic = hub.topic(alice)
    a = await connect(alice)
    assert await publish(a, topic, "old 1") == 1
    assert await publish(a, topic, "old 2") == 2

    b = await connect(bob)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    c = await connect(carol)
    assert_ok(await c.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    await bye(c)

    assert await publish(a, topic, "new") == 3
    assert_message(await b.next_event(), topic=topic, sender=alice.username, content="new", seq=3)
    await bye(b)
    # Nothing older is pending for either of them; carol (offline) gets only seq 3.
    b2 = await connect(bob)
    assert b2.hello["pending"] == 0  # type: ignore[attr-defined]
    c2 = await connect(carol)
    assert c2.hello["pending"] == 1  # type: ignore[attr-defined]
    event = await c2.next_event()
    assert_message(event, topic=topic, sender=alice.username, content="new", seq=3, pending=True)
    # The older messages are there through history.
    reply = await b2.request("history", topic_name=topic)
    assert [m["content"] for m in reply["messages"]] == ["old 1", "old 2", "new"]


# -- unsubscribe --------------------------------------------------------------------------------


async def test_unsubscribe_stops_delivery(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a, b = await connect(alice), await connect(bob)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    await publish(a, topic, "in")
    assert_message(await b.next_event(), topic=topic, sender=alice.username, content="in", seq=1)

    assert_ok(await b.request("unsubscribe", topic_name=topic), "unsubscribe", topic_name=topic)
    await publish(a, topic, "while out")
    reply = await b.request("message", topic_name=topic, content="x")
    assert_error(reply, "message", "not_a_member", topic_name=topic)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    await publish(a, topic, "back")
    # The message published while bob was out never reached him.
    assert_message(await b.next_event(), topic=topic, sender=alice.username, content="back", seq=3)


async def test_unsubscribe_errors(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    b = await connect(bob)
    missing = unique("missing")
    reply = await b.request("unsubscribe", topic_name=missing)
    assert_error(reply, "unsubscribe", "not_found", topic_name=missing)
    reply = await b.request("unsubscribe", topic_name=topic)
    assert_error(reply, "unsubscribe", "not_a_member", topic_name=topic)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    assert_ok(await b.request("unsubscribe", topic_name=topic), "unsubscribe", topic_name=topic)
    reply = await b.request("unsubscribe", topic_name=topic)
    assert_error(reply, "unsubscribe", "not_a_member", topic_name=topic)
    reply = await b.request("unsubscribe", topic_name=alice.username)
    assert_error(reply, "unsubscribe", "not_found", topic_name=alice.username)


# -- create --------------------------------------------------------------------------------------


async def test_create_public_by_default(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    a, b = await connect(alice), await connect(bob)
    name = unique("pub")
    reply = await a.request("create", topic_name=name)
    assert_ok(reply, "create", topic_name=name, is_private=False)
    expected = {
        "topic_name": name,
        "is_private": False,
        "owner": alice.username,
        "members": 1,
        "member": True,
    }
    assert topic_row(await a.request("list_topics"), name) == expected
    assert topic_row(await b.request("list_topics"), name) == {**expected, "member": False}
    # The creator is a member: it may publish right away and gets its own message.
    assert await publish(a, name, "first") == 1
    assert_message(await a.next_event(), topic=name, sender=alice.username, content="first", seq=1)
    assert_ok(await b.request("subscribe", topic_name=name), "subscribe", topic_name=name)


async def test_create_private(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    a, b = await connect(alice), await connect(bob)
    name = unique("priv")
    reply = await a.request("create", topic_name=name, is_private=True)
    assert_ok(reply, "create", topic_name=name, is_private=True)
    assert topic_row(await a.request("list_topics"), name) == {
        "topic_name": name,
        "is_private": True,
        "owner": alice.username,
        "members": 1,
        "member": True,
    }
    assert topic_row(await b.request("list_topics"), name) is None
    assert_error(
        await b.request("subscribe", topic_name=name), "subscribe", "forbidden", topic_name=name
    )
    explicit = unique("pub")
    reply = await a.request("create", topic_name=explicit, is_private=False)
    assert_ok(reply, "create", topic_name=explicit, is_private=False)


async def test_create_a_taken_name(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    existing = hub.topic(bob)
    a = await connect(alice)
    for name in (existing, bob.username, alice.username):
        for private in (False, True):
            reply = await a.request("create", topic_name=name, is_private=private)
            assert_error(reply, "create", "already_exists", topic_name=name)
    mine = unique("t")
    assert_ok(
        await a.request("create", topic_name=mine), "create", topic_name=mine, is_private=False
    )
    reply = await a.request("create", topic_name=mine)
    assert_error(reply, "create", "already_exists", topic_name=mine)
    # The failed attempts changed nothing: bob still owns his topic.
    row = topic_row(await a.request("list_topics"), existing)
    assert row is not None and row["owner"] == bob.username and row["members"] == 1
    # Names are case-sensitive.
    upper = mine.upper()
    assert_ok(
        await a.request("create", topic_name=upper), "create", topic_name=upper, is_private=False
    )


@pytest.mark.parametrize(
    "name",
    [
        "has space",
        "slash/name",
        "colon:name",
        "dm:a:b",
        "ñandú",
        "emoji🚀",
        "tab\tname",
        "a" * 65,
        "",
    ],
)
async def test_create_with_a_bad_name(hub: Harness, connect: Connect, name: str) -> None:
    alice = hub.account("alice")
    a = await connect(alice)
    reply = await a.request("create", topic_name=name)
    assert_error(reply, "create", "invalid_request", topic_name=name)
    assert topic_row(await a.request("list_topics"), name) is None


async def test_create_with_all_allowed_characters(hub: Harness, connect: Connect) -> None:
    a = await connect(hub.account("alice"))
    name = unique("A-z_0.9-")
    assert_ok(
        await a.request("create", topic_name=name), "create", topic_name=name, is_private=False
    )
    longest = unique("L") + "x" * 53
    assert len(longest) == 64
    assert_ok(
        await a.request("create", topic_name=longest),
        "create",
        topic_name=longest,
        is_private=False,
    )


async def test_create_with_a_bad_is_private(hub: Harness, connect: Connect) -> None:
    a = await connect(hub.account("alice"))
    name = unique("t")
    values: list[Any] = ["yes", 1, None, []]
    for value in values:
        reply = await a.request("create", topic_name=name, is_private=value)
        assert_error(reply, "create", "invalid_request", topic_name=name)
    assert topic_row(await a.request("list_topics"), name) is None


# -- invite ----------------------------------------------------------------------------------


async def test_invite_reaches_every_live_connection_of_the_invitee(
    hub: Harness, connect: Connect
) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice, private=True)
    a, b1, b2 = await connect(alice), await connect(bob), await connect(bob)
    reply = await a.request("invite", topic_name=topic, username=bob.username)
    assert_ok(reply, "invite", topic_name=topic, username=bob.username)
    for b in (b1, b2):
        assert await b.next_event() == {
            "event": "invited",
            "topic_name": topic,
            "by": alice.username,
        }
    # From now on bob's live connections get the topic's messages, without subscribing.
    await publish(a, topic, {"hi": "bob"})
    for b in (b1, b2):
        event = await b.next_event()
        assert_message(event, topic=topic, sender=alice.username, content={"hi": "bob"}, seq=1)
    # And bob may publish and read the history.
    assert await publish(b1, topic, "thanks") == 2
    reply = await b2.request("history", topic_name=topic)
    assert [m["seq"] for m in reply["messages"]] == [1, 2]
    # The inviter got no invited event of its own.
    assert_message(
        await a.next_event(), topic=topic, sender=alice.username, content={"hi": "bob"}, seq=1
    )
    assert_message(await a.next_event(), topic=topic, sender=bob.username, content="thanks", seq=2)


async def test_an_offline_invitee_finds_the_topic_in_list_topics(
    hub: Harness, connect: Connect
) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice, private=True)
    a = await connect(alice)
    assert_ok(
        await a.request("invite", topic_name=topic, username=bob.username),
        "invite",
        topic_name=topic,
        username=bob.username,
    )
    b = await connect(bob)
    # The invited event is not replayed: the first frame after connected is the ping reply.
    assert b.hello["pending"] == 0  # type: ignore[attr-defined]
    await barrier(b)
    assert not b.inbox
    assert topic_row(await b.request("list_topics"), topic) == {
        "topic_name": topic,
        "is_private": True,
        "owner": alice.username,
        "members": 2,
        "member": True,
    }


async def test_a_member_may_invite_to_a_public_topic(hub: Harness, connect: Connect) -> None:
    alice, bob, carol = hub.account("alice"), hub.account("bob"), hub.account("carol")
    topic = hub.topic(alice)
    b, c = await connect(bob), await connect(carol)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    reply = await b.request("invite", topic_name=topic, username=carol.username)
    assert_ok(reply, "invite", topic_name=topic, username=carol.username)
    assert await c.next_event() == {"event": "invited", "topic_name": topic, "by": bob.username}
    await publish(b, topic, "welcome")
    assert_message(await c.next_event(), topic=topic, sender=bob.username, content="welcome", seq=1)


async def test_invite_errors(hub: Harness, connect: Connect) -> None:
    alice, bob, carol = hub.account("alice"), hub.account("bob"), hub.account("carol")
    private = hub.topic(alice, private=True)
    public = hub.topic(alice)
    a, c = await connect(alice), await connect(carol)
    missing_topic, missing_user = unique("none"), unique("nobody")

    reply = await a.request("invite", topic_name=missing_topic, username=bob.username)
    assert_error(reply, "invite", "not_found", topic_name=missing_topic)
    reply = await a.request("invite", topic_name=private, username=missing_user)
    assert_error(reply, "invite", "not_found", topic_name=private)
    # A username is not a topic.
    reply = await a.request("invite", topic_name=bob.username, username=carol.username)
    assert_error(reply, "invite", "not_found", topic_name=bob.username)
    # The inviter must be a member, of a private or a public topic.
    for topic in (private, public):
        reply = await c.request("invite", topic_name=topic, username=bob.username)
        assert_error(reply, "invite", "not_a_member", topic_name=topic)
        # Nor can one invite oneself in.
        reply = await c.request("invite", topic_name=topic, username=carol.username)
        assert_error(reply, "invite", "not_a_member", topic_name=topic)
    # Already a member: the owner, then an invitee invited twice.
    reply = await a.request("invite", topic_name=private, username=alice.username)
    assert_error(reply, "invite", "already_member", topic_name=private)
    assert_ok(
        await a.request("invite", topic_name=private, username=bob.username),
        "invite",
        topic_name=private,
        username=bob.username,
    )
    reply = await a.request("invite", topic_name=private, username=bob.username)
    assert_error(reply, "invite", "already_member", topic_name=private)
    row = topic_row(await a.request("list_topics"), private)
    assert row is not None and row["members"] == 2


# -- message ---------------------------------------------------------------------------------


async def test_message_seq_rises_by_one_and_the_id_is_echoed(
    hub: Harness, connect: Connect
) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    a = await connect(alice)
    reply = await a.request("message", topic_name=topic, content="a")
    assert_ok(reply, "message", topic_name=topic, seq=1)
    reply = await a.request("message", topic_name=topic, content="b", id="client-1")
    assert_ok(reply, "message", topic_name=topic, seq=2, id="client-1")
    reply = await a.request("message", topic_name=topic, content="c", id=77)
    assert_ok(reply, "message", topic_name=topic, seq=3, id=77)
    for seq, content in enumerate("abc", start=1):
        event = await a.next_event()
        assert_message(event, topic=topic, sender=alice.username, content=content, seq=seq)
    # Another topic has its own sequence.
    other = hub.topic(alice)
    assert_ok(
        await a.request("message", topic_name=other, content="z"),
        "message",
        topic_name=other,
        seq=1,
    )


async def test_message_errors(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    public, private = hub.topic(alice), hub.topic(alice, private=True)
    b = await connect(bob)
    missing = unique("nobody")
    reply = await b.request("message", topic_name=missing, content="x", id="i1")
    assert_error(reply, "message", "not_found", topic_name=missing)
    for topic in (public, private):
        reply = await b.request("message", topic_name=topic, content="x", id="i2")
        assert_error(reply, "message", "not_a_member", topic_name=topic)
    # Nothing was stored.
    reply = await b.request("history", topic_name=public)
    assert_ok(reply, "history", topic_name=public, messages=[])


async def test_an_idempotent_retry_returns_the_same_seq_and_is_not_delivered_twice(
    hub: Harness, connect: Connect
) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a, b = await connect(alice), await connect(bob)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    first = await a.request("message", topic_name=topic, content="once", id="same")
    assert_ok(first, "message", topic_name=topic, seq=1, id="same")
    retry = await a.request("message", topic_name=topic, content="once", id="same")
    assert_ok(retry, "message", topic_name=topic, seq=1, id="same")
    # Even from another connection of the same user.
    a2 = await connect(alice)
    retry = await a2.request("message", topic_name=topic, content="once", id="same")
    assert_ok(retry, "message", topic_name=topic, seq=1, id="same")
    # An integer id and a string id with the same digits are the same id.
    assert_ok(
        await a.request("message", topic_name=topic, content="n", id=5),
        "message",
        topic_name=topic,
        seq=2,
        id=5,
    )
    assert_ok(
        await a.request("message", topic_name=topic, content="n", id=5),
        "message",
        topic_name=topic,
        seq=2,
        id=5,
    )
    # Another user may use the same id: ids are per sender.
    assert_ok(
        await b.request("message", topic_name=topic, content="bob's", id="same"),
        "message",
        topic_name=topic,
        seq=3,
        id="same",
    )
    # Each message reached bob once, in order.
    events = await b.events(3)
    assert_message(events[0], topic=topic, sender=alice.username, content="once", seq=1)
    assert_message(events[1], topic=topic, sender=alice.username, content="n", seq=2)
    assert_message(events[2], topic=topic, sender=bob.username, content="bob's", seq=3)
    reply = await b.request("history", topic_name=topic)
    assert [m["seq"] for m in reply["messages"]] == [1, 2, 3]


async def test_every_connection_of_every_member_gets_each_message(
    hub: Harness, connect: Connect
) -> None:
    alice, bob, carol = hub.account("alice"), hub.account("bob"), hub.account("carol")
    topic = hub.topic(alice)
    a1, a2 = await connect(alice), await connect(alice)
    b1, b2 = await connect(bob), await connect(bob)
    c = await connect(carol)  # not a member
    assert_ok(await b1.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    assert await publish(a1, topic, "from a1") == 1
    assert await publish(b2, topic, "from b2") == 2
    for conn in (a1, a2, b1, b2):
        events = await conn.events(2)
        assert_message(events[0], topic=topic, sender=alice.username, content="from a1", seq=1)
        assert_message(events[1], topic=topic, sender=bob.username, content="from b2", seq=2)
    await barrier(c)
    assert not c.inbox


@pytest.mark.parametrize(
    "content",
    [
        None,
        0,
        -12.5,
        True,
        "",
        "plain text ñ 🚀",
        [],
        {},
        [1, "two", None, [3, [4]]],
        {"text": "hola", "meta": {"tags": ["a", "b"], "n": None, "ok": False}},
    ],
)
async def test_content_is_any_json_value(hub: Harness, connect: Connect, content: Any) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a, b = await connect(alice), await connect(bob)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    assert await publish(a, topic, content) == 1
    event = await b.next_event()
    assert_message(event, topic=topic, sender=alice.username, content=content, seq=1)
    assert "content" in event
    reply = await b.request("history", topic_name=topic)
    assert reply["messages"] == [event]


async def test_direct_messages(hub: Harness, connect: Connect) -> None:
    alice, bob, carol = hub.account("alice"), hub.account("bob"), hub.account("carol")
    a1, a2 = await connect(alice), await connect(alice)
    b = await connect(bob)
    c = await connect(carol)

    reply = await a1.request("message", topic_name=bob.username, content="hi bob", id="d1")
    assert_ok(reply, "message", topic_name=bob.username, seq=1, id="d1")
    # The recipient sees the sender's name (the name to reply to) ...
    event = await b.next_event()
    assert_message(
        event, topic=alice.username, sender=alice.username, content="hi bob", seq=1, direct=True
    )
    # ... and the sender's connections, the sending one included, see the recipient's name.
    for conn in (a1, a2):
        event = await conn.next_event()
        assert_message(
            event, topic=bob.username, sender=alice.username, content="hi bob", seq=1, direct=True
        )

    # The reply goes to the same conversation: seq 2.
    reply = await b.request("message", topic_name=alice.username, content={"re": "hi"})
    assert_ok(reply, "message", topic_name=alice.username, seq=2)
    event = await b.next_event()
    assert_message(
        event, topic=alice.username, sender=bob.username, content={"re": "hi"}, seq=2, direct=True
    )
    for conn in (a1, a2):
        event = await conn.next_event()
        assert_message(
            event, topic=bob.username, sender=bob.username, content={"re": "hi"}, seq=2, direct=True
        )

    # Another conversation has its own sequence; carol is not part of the first one.
    reply = await a2.request("message", topic_name=carol.username, content="hi carol")
    assert_ok(reply, "message", topic_name=carol.username, seq=1)
    event = await c.next_event()
    assert_message(
        event, topic=alice.username, sender=alice.username, content="hi carol", seq=1, direct=True
    )
    for conn in (a1, a2):
        event = await conn.next_event()
        assert_message(
            event,
            topic=carol.username,
            sender=alice.username,
            content="hi carol",
            seq=1,
            direct=True,
        )
    await barrier(b)
    assert not b.inbox

    # Direct conversations are not topics.
    for conn in (a1, b, c):
        names = [row["topic_name"] for row in (await conn.request("list_topics"))["topics"]]
        assert not {alice.username, bob.username, carol.username} & set(names)
        assert not [name for name in names if ":" in name]


async def test_direct_messages_are_pending_for_an_offline_recipient(
    hub: Harness, connect: Connect
) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    a = await connect(alice)
    assert await publish(a, bob.username, "one") == 1
    assert await publish(a, bob.username, "two") == 2
    b = await connect(bob)
    assert b.hello["pending"] == 2  # type: ignore[attr-defined]
    for seq, content in ((1, "one"), (2, "two")):
        event = await b.next_event()
        assert_message(
            event, topic=alice.username, sender=alice.username, content=content, seq=seq,
            direct=True, pending=True,
        )  # fmt: skip
    # The sender's own messages are never pending for the sender.
    await bye(a)
    a2 = await connect(alice)
    assert a2.hello["pending"] == 0  # type: ignore[attr-defined]


# -- list_topics -------------------------------------------------------------------------------


async def test_list_topics(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    mine_public = hub.topic(alice)
    mine_private = hub.topic(alice, private=True)
    bobs_private = hub.topic(bob, private=True)
    bobs_public = hub.topic(bob)
    a, b = await connect(alice), await connect(bob)
    assert_ok(
        await a.request("subscribe", topic_name=bobs_public), "subscribe", topic_name=bobs_public
    )
    await publish(a, bob.username, "a direct message")

    reply = await a.request("list_topics")
    assert set(reply) == {"action", "result", "topics", "ref"}
    assert_ok(reply, "list_topics", topics=reply["topics"])
    for row in reply["topics"]:
        assert set(row) == {"topic_name", "is_private", "owner", "members", "member"}
        assert ":" not in row["topic_name"]
    names = [row["topic_name"] for row in reply["topics"]]
    assert len(names) == len(set(names))
    assert bob.username not in names and alice.username not in names
    assert topic_row(reply, mine_public) == {
        "topic_name": mine_public,
        "is_private": False,
        "owner": alice.username,
        "members": 1,
        "member": True,
    }
    assert topic_row(reply, mine_private) == {
        "topic_name": mine_private,
        "is_private": True,
        "owner": alice.username,
        "members": 1,
        "member": True,
    }
    assert topic_row(reply, bobs_private) is None
    assert topic_row(reply, bobs_public) == {
        "topic_name": bobs_public,
        "is_private": False,
        "owner": bob.username,
        "members": 2,
        "member": True,
    }

    reply = await b.request("list_topics")
    assert topic_row(reply, mine_public) == {
        "topic_name": mine_public,
        "is_private": False,
        "owner": alice.username,
        "members": 1,
        "member": False,
    }
    assert topic_row(reply, mine_private) is None
    assert topic_row(reply, bobs_private) == {
        "topic_name": bobs_private,
        "is_private": True,
        "owner": bob.username,
        "members": 1,
        "member": True,
    }
    # Membership changes show up: bob invited to alice's private topic, alice leaving bob's.
    await a.request("invite", topic_name=mine_private, username=bob.username)
    await a.request("unsubscribe", topic_name=bobs_public)
    reply = await b.request("list_topics")
    row = topic_row(reply, mine_private)
    assert row is not None and row["members"] == 2 and row["member"] is True
    row = topic_row(reply, bobs_public)
    assert row is not None and row["members"] == 1


# -- history -----------------------------------------------------------------------------------


async def test_history_windows(hub: Harness, connect: Connect) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    a = await connect(alice)
    assert await publish_many(a, topic, 7) == [1, 2, 3, 4, 5, 6, 7]
    live = await a.events(7)

    async def seqs(**fields: Any) -> list[int]:
        reply = await a.request("history", topic_name=topic, **fields)
        assert_ok(reply, "history", topic_name=topic, messages=reply["messages"])
        return [m["seq"] for m in reply["messages"]]

    # The default: everything (fewer than 50), oldest first, exactly as delivered live.
    reply = await a.request("history", topic_name=topic)
    assert reply["messages"] == live
    assert [m["content"] for m in reply["messages"]] == list(range(7))
    # Without since: the newest `limit`, oldest first.
    assert await seqs(limit=3) == [5, 6, 7]
    assert await seqs(limit=1) == [7]
    assert await seqs(limit=100) == [1, 2, 3, 4, 5, 6, 7]
    # before is exclusive.
    assert await seqs(before=5) == [1, 2, 3, 4]
    assert await seqs(before=5, limit=2) == [3, 4]
    assert await seqs(before=1) == []
    assert await seqs(before=100) == [1, 2, 3, 4, 5, 6, 7]
    # since alone: the oldest `limit` after it (exclusive).
    assert await seqs(since=2) == [3, 4, 5, 6, 7]
    assert await seqs(since=2, limit=2) == [3, 4]
    assert await seqs(since=0, limit=3) == [1, 2, 3]
    assert await seqs(since=7) == []
    # Both: the newest `limit` strictly between them.
    assert await seqs(since=2, before=7) == [3, 4, 5, 6]
    assert await seqs(since=2, before=7, limit=2) == [5, 6]
    assert await seqs(since=3, before=4) == []


async def test_history_limit_is_50_by_default_and_at_most_100(
    hub: Harness, connect: Connect
) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    a = await connect(alice)
    assert await publish_many(a, topic, 105) == list(range(1, 106))

    async def seqs(**fields: Any) -> list[int]:
        reply = await a.request("history", topic_name=topic, seconds=20, **fields)
        assert reply["result"] == "ok", reply
        return [m["seq"] for m in reply["messages"]]

    assert await seqs() == list(range(56, 106))
    assert await seqs(limit=100) == list(range(6, 106))
    assert await seqs(limit=101) == list(range(6, 106))
    assert await seqs(limit=5000) == list(range(6, 106))
    assert await seqs(since=0, limit=1000) == list(range(1, 101))
    assert await seqs(since=0) == list(range(1, 51))
    assert await seqs(before=103, limit=500) == list(range(3, 103))


async def test_history_permissions(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    public, private = hub.topic(alice), hub.topic(alice, private=True)
    a, b = await connect(alice), await connect(bob)
    await publish(a, public, "open")
    await publish(a, private, "secret")
    # Anyone may read a public topic's history, without joining it.
    reply = await b.request("history", topic_name=public)
    assert_ok(reply, "history", topic_name=public, messages=reply["messages"])
    assert len(reply["messages"]) == 1
    assert_message(reply["messages"][0], topic=public, sender=alice.username, content="open", seq=1)
    # A private topic only its members.
    reply = await b.request("history", topic_name=private)
    assert_error(reply, "history", "forbidden", topic_name=private)
    reply = await b.request("history", topic_name=private, since=0, limit=5)
    assert_error(reply, "history", "forbidden", topic_name=private)
    missing = unique("none")
    reply = await b.request("history", topic_name=missing)
    assert_error(reply, "history", "not_found", topic_name=missing)
    # Once invited, bob reads it all (also what was sent before he joined).
    await a.request("invite", topic_name=private, username=bob.username)
    reply = await b.request("history", topic_name=private)
    assert_ok(reply, "history", topic_name=private, messages=reply["messages"])
    assert [m["content"] for m in reply["messages"]] == ["secret"]


async def test_direct_history_by_username(hub: Harness, connect: Connect) -> None:
    alice, bob, carol = hub.account("alice"), hub.account("bob"), hub.account("carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    await publish(a, bob.username, "ping")
    await publish(b, alice.username, "pong")

    reply = await a.request("history", topic_name=bob.username)
    assert_ok(reply, "history", topic_name=bob.username, messages=reply["messages"])
    first, second = reply["messages"]
    assert_message(
        first, topic=bob.username, sender=alice.username, content="ping", seq=1, direct=True
    )
    assert_message(
        second, topic=bob.username, sender=bob.username, content="pong", seq=2, direct=True
    )

    reply = await b.request("history", topic_name=alice.username, limit=1)
    assert_ok(reply, "history", topic_name=alice.username, messages=reply["messages"])
    (only,) = reply["messages"]
    assert_message(
        only, topic=alice.username, sender=bob.username, content="pong", seq=2, direct=True
    )

    # A third user addressing either of them reads only their own (empty) conversation.
    for name in (alice.username, bob.username):
        reply = await c.request("history", topic_name=name)
        assert_ok(reply, "history", topic_name=name, messages=[])
    # The internal name of the conversation is not an address.
    for name in (f"dm:{alice.username}:{bob.username}", f"dm:{bob.username}:{alice.username}"):
        for conn in (a, c):
            reply = await conn.request("history", topic_name=name)
            assert_error(reply, "history", "not_found", topic_name=name)


# -- ack -------------------------------------------------------------------------------------


async def test_manual_ack_replays_what_was_not_acked(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a = await connect(alice)
    b = await connect(bob, "?ack=manual")
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    for i in range(1, 4):
        assert await publish(a, topic, f"m{i}") == i
    for i in range(1, 4):
        assert_message(
            await b.next_event(), topic=topic, sender=alice.username, content=f"m{i}", seq=i
        )
    # Acking seq 2 acknowledges 1 and 2 (seq 1 was never acked on its own).
    reply = await b.request("ack", topic_name=topic, seq=2)
    assert_ok(reply, "ack", topic_name=topic, seq=2)
    await bye(b)

    b = await connect(bob, "?ack=manual")
    assert b.hello == {"event": "connected", "username": bob.username, "pending": 1}  # type: ignore[attr-defined]
    event = await b.next_event()
    assert_message(event, topic=topic, sender=alice.username, content="m3", seq=3, pending=True)
    await bye(b)  # not acked: replayed again (at-least-once)

    b = await connect(bob, "?ack=manual")
    assert b.hello["pending"] == 1  # type: ignore[attr-defined]
    event = await b.next_event()
    assert_message(event, topic=topic, sender=alice.username, content="m3", seq=3, pending=True)
    assert_ok(await b.request("ack", topic_name=topic, seq=3), "ack", topic_name=topic, seq=3)
    await bye(b)

    b = await connect(bob, "?ack=manual")
    assert b.hello["pending"] == 0  # type: ignore[attr-defined]


async def test_manual_ack_of_a_direct_conversation(
    hub: Harness, connect: Connect, clients: list[WsClient]
) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    a = await connect(alice)
    # The query form takes ack=manual too.
    b = await WsClient.connect(f"{hub.server.ws_url}/ws?token={bob.token}&ack=manual")
    clients.append(b)
    assert await b.recv() == {"event": "connected", "username": bob.username, "pending": 0}
    await publish(a, bob.username, "d1")
    await publish(a, bob.username, "d2")
    for seq in (1, 2):
        event = await b.next_event()
        assert_message(
            event,
            topic=alice.username,
            sender=alice.username,
            content=f"d{seq}",
            seq=seq,
            direct=True,
        )
    reply = await b.request("ack", topic_name=alice.username, seq=1)
    assert_ok(reply, "ack", topic_name=alice.username, seq=1)
    await bye(b)

    b = await connect(bob, "?ack=manual")
    assert b.hello["pending"] == 1  # type: ignore[attr-defined]
    event = await b.next_event()
    assert_message(
        event,
        topic=alice.username,
        sender=alice.username,
        content="d2",
        seq=2,
        direct=True,
        pending=True,
    )
    assert_ok(
        await b.request("ack", topic_name=alice.username, seq=2),
        "ack",
        topic_name=alice.username,
        seq=2,
    )
    await bye(b)
    b = await connect(bob, "?ack=manual")
    assert b.hello["pending"] == 0  # type: ignore[attr-defined]


async def test_auto_ack_never_replays_what_was_written(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a, b = await connect(alice), await connect(bob)
    assert_ok(await b.request("subscribe", topic_name=topic), "subscribe", topic_name=topic)
    for i in range(1, 4):
        await publish(a, topic, i)
    assert [e["seq"] for e in await b.events(3)] == [1, 2, 3]
    await bye(b)
    b = await connect(bob)
    assert b.hello["pending"] == 0  # type: ignore[attr-defined]
    # ack is allowed (and harmless) without ack=manual.
    assert_ok(await b.request("ack", topic_name=topic, seq=3), "ack", topic_name=topic, seq=3)


async def test_ack_errors(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    public, private = hub.topic(alice), hub.topic(alice, private=True)
    b = await connect(bob, "?ack=manual")
    missing = unique("none")
    reply = await b.request("ack", topic_name=missing, seq=1)
    assert_error(reply, "ack", "not_found", topic_name=missing)
    for topic in (public, private):
        reply = await b.request("ack", topic_name=topic, seq=1)
        assert_error(reply, "ack", "not_a_member", topic_name=topic)
    reply = await b.request("ack", topic_name=public)
    assert_error(reply, "ack", "invalid_request", topic_name=public)
