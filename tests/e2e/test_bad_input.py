"""Malformed, forbidden and abusive input against a real server.

Every bad frame gets one clear error reply and the connection stays open (a ping proves it);
the few cases that must end a connection (a frame over the size limit, invalid UTF-8) end
only that connection, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import Backend, Harness, start_server, unique
from topichub.testing import WsClient, timeout

Connect = Callable[..., Awaitable[WsClient]]

MAX_FRAME = 64 * 1024  # the default --max-frame-bytes
MAX_CONTENT = 32768  # the default --max-message-bytes


async def alive(client: WsClient) -> None:
    """The connection still answers (events that arrive meanwhile wait in the inbox)."""
    ref = unique("alive")
    await client.send({"action": "ping", "ref": ref})
    assert await client.reply(ref, 10) == {"action": "ping", "result": "ok", "ref": ref}


async def server_alive(hub: Harness) -> None:
    """A brand-new connection works end to end."""
    account = hub.account("probe")
    client = await hub.connect(account)
    try:
        await alive(client)
    finally:
        await client.close()


async def error_for(client: WsClient, frame: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """Send one raw frame; return its reply, checking the common error shape."""
    await client.send(frame)
    while "result" not in (reply := await client.recv(10)):
        client.inbox.append(reply)  # a message event, not the reply
    assert reply["result"] == "error", reply
    assert isinstance(reply.get("message"), str) and reply["message"], reply
    return reply


def without_message(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k != "message"}


# -- frames that are not JSON, or not the right JSON ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "hello",
        "{",
        '{"action": "ping"',
        "{'action': 'ping'}",
        '{"action": "ping",}',
        "NaN",
        '{"action": "ping", "ref": Infinity}',
        "[" * 5000 + "]" * 5000,
        '{"action": "ping"} {"action": "ping"}',
    ],
)
async def test_not_json(hub: Harness, connect: Connect, text: str) -> None:
    client = await connect(hub.account())
    reply = await error_for(client, text)
    assert without_message(reply) == {"result": "error", "error": "invalid_json"}
    await alive(client)


@pytest.mark.parametrize(
    "text", ["[]", '["ping"]', '"ping"', "42", "null", "true", '[{"action": "ping"}]']
)
async def test_json_that_is_not_an_object(hub: Harness, connect: Connect, text: str) -> None:
    client = await connect(hub.account())
    reply = await error_for(client, text)
    assert without_message(reply) == {"result": "error", "error": "invalid_request"}
    await alive(client)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({}, {}),
        ({"ref": "no-action"}, {"ref": "no-action"}),
        ({"action": None, "ref": 1}, {"ref": 1}),
        ({"action": 7, "ref": "num"}, {"ref": "num"}),
        ({"action": ["ping"], "ref": "list"}, {"ref": "list"}),
        ({"action": {"name": "ping"}}, {}),
        ({"topic_name": "t", "ref": "tn"}, {"topic_name": "t", "ref": "tn"}),
    ],
)
async def test_action_missing_or_not_a_string(
    hub: Harness, connect: Connect, frame: dict[str, Any], expected: dict[str, Any]
) -> None:
    client = await connect(hub.account())
    reply = await error_for(client, frame)
    assert without_message(reply) == {"result": "error", "error": "invalid_request", **expected}
    await alive(client)


@pytest.mark.parametrize(
    "action", ["publish", "SUBSCRIBE", "Ping", "subscribe ", "", "suscribir", "x" * 200]
)
async def test_unknown_action(hub: Harness, connect: Connect, action: str) -> None:
    client = await connect(hub.account())
    reply = await error_for(client, {"action": action, "ref": "u", "topic_name": "news"})
    assert without_message(reply) == {
        "action": action[:64],
        "result": "error",
        "error": "unknown_action",
        "topic_name": "news",
        "ref": "u",
    }
    await alive(client)


@pytest.mark.parametrize(
    "ref",
    ["x" * 65, 1.5, True, False, ["r"], {"r": 1}],
)
async def test_a_bad_ref(hub: Harness, connect: Connect, ref: Any) -> None:
    client = await connect(hub.account())
    reply = await error_for(client, {"action": "ping", "ref": ref})
    # The bad ref is not echoed: the reply names the field instead.
    assert without_message(reply) == {
        "action": "ping",
        "result": "error",
        "error": "invalid_request",
    }
    assert "ref" in reply["message"]
    await alive(client)


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "subscribe"},
        {"action": "subscribe", "topic_name": ""},
        {"action": "subscribe", "topic_name": 12},
        {"action": "suscribe", "topic_name": None},
        {"action": "subscribe", "topic_name": ["news"]},
        {"action": "subscribe", "topic_name": "n" * 65},
        {"action": "unsubscribe", "topic_name": {"name": "news"}},
        {"action": "create", "topic_name": "news", "is_private": "true"},
        {"action": "create", "topic_name": "news", "is_private": 0},
        {"action": "invite", "topic_name": "news"},
        {"action": "invite", "topic_name": "news", "username": 5},
        {"action": "message", "topic_name": "news"},
        {"action": "message", "content": "hi"},
        {"action": "message", "topic_name": "news", "content": "hi", "id": True},
        {"action": "message", "topic_name": "news", "content": "hi", "id": 2.5},
        {"action": "message", "topic_name": "news", "content": "hi", "id": ""},
        {"action": "message", "topic_name": "news", "content": "hi", "id": "i" * 65},
        {"action": "message", "topic_name": "news", "content": "hi", "id": {"k": 1}},
        {"action": "history", "topic_name": "news", "limit": 0},
        {"action": "history", "topic_name": "news", "limit": "10"},
        {"action": "history", "topic_name": "news", "limit": -5},
        {"action": "history", "topic_name": "news", "before": 1.5},
        {"action": "history", "topic_name": "news", "since": -1},
        {"action": "history", "topic_name": "news", "since": True},
        {"action": "history", "topic_name": "news", "before": 2**63},
        {"action": "ack", "topic_name": "news"},
        {"action": "ack", "topic_name": "news", "seq": "3"},
        {"action": "ack", "topic_name": "news", "seq": -1},
        {"action": "ack", "seq": 1},
    ],
)
async def test_wrong_field_types(hub: Harness, connect: Connect, fields: dict[str, Any]) -> None:
    client = await connect(hub.account())
    reply = await error_for(client, {**fields, "ref": "w"})
    expected: dict[str, Any] = {"action": fields["action"], "result": "error"}
    expected["error"] = "invalid_request"
    if isinstance(fields.get("topic_name"), str):
        expected["topic_name"] = fields["topic_name"]
    expected["ref"] = "w"
    assert without_message(reply) == expected
    await alive(client)


async def test_content_nested_too_deep_to_store(hub: Harness, connect: Connect) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    client = await connect(alice)
    deep = "[" * 300 + "]" * 300
    frame = f'{{"action": "message", "topic_name": "{topic}", "content": {deep}, "ref": "deep"}}'
    reply = await error_for(client, frame)
    assert without_message(reply) == {
        "action": "message",
        "result": "error",
        "error": "invalid_request",
        "topic_name": topic,
        "ref": "deep",
    }
    await alive(client)
    # Nothing was stored: the next message is seq 1, and a reasonably nested one is fine.
    nested: Any = [[[[{"a": [1, {"b": None}]}]]]]
    reply = await client.request("message", topic_name=topic, content=nested)
    assert reply == {
        "action": "message",
        "result": "ok",
        "topic_name": topic,
        "seq": 1,
        "ref": reply["ref"],
    }
    assert (await client.next_event())["content"] == nested


async def test_binary_frames_are_refused(hub: Harness, connect: Connect) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    client = await connect(alice)
    for data in (
        b'{"action": "ping", "ref": "bin"}',
        orjson.dumps({"action": "message", "topic_name": topic, "content": "x", "ref": "b2"}),
        b"\x00\x01\xff\xfe",
        b"",
    ):
        reply = await error_for(client, data)
        assert without_message(reply) == {"result": "error", "error": "invalid_request"}
        assert "binary" in reply["message"]
        await alive(client)
    # The JSON inside the binary frame was not acted upon.
    reply = await client.request("history", topic_name=topic)
    assert reply["messages"] == []


async def test_many_bad_frames_in_a_row(hub: Harness, connect: Connect) -> None:
    """A burst of garbage gets one reply per frame, in order, and the connection lives on."""
    client = await connect(hub.account())
    frames: list[tuple[str, str]] = []
    for i in range(60):
        kind = i % 4
        if kind == 0:
            frames.append(("not json {" + str(i), "invalid_json"))
        elif kind == 1:
            frames.append((orjson.dumps({"action": "nope", "ref": i}).decode(), "unknown_action"))
        elif kind == 2:
            frames.append((orjson.dumps({"action": "ack", "ref": i}).decode(), "invalid_request"))
        else:
            frames.append((orjson.dumps([i]).decode(), "invalid_request"))
    for text, _ in frames:
        await client.send(text)
    for i, (_, code) in enumerate(frames):
        reply = await client.recv(10)
        assert reply["error"] == code, (i, reply)
        if i % 4 in (1, 2):
            assert reply["ref"] == i
    await alive(client)


# -- forbidden actions and unknown names ------------------------------------------------------


async def test_forbidden_actions(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    private, public = hub.topic(alice, private=True), hub.topic(alice)
    client = await connect(bob)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"action": "subscribe", "topic_name": private}, "forbidden"),
        ({"action": "suscribe", "topic_name": private}, "forbidden"),
        ({"action": "history", "topic_name": private}, "forbidden"),
        ({"action": "message", "topic_name": private, "content": "x"}, "not_a_member"),
        ({"action": "message", "topic_name": public, "content": "x"}, "not_a_member"),
        ({"action": "unsubscribe", "topic_name": public}, "not_a_member"),
        ({"action": "unsubscribe", "topic_name": private}, "not_a_member"),
        ({"action": "invite", "topic_name": private, "username": bob.username}, "not_a_member"),
        ({"action": "invite", "topic_name": public, "username": alice.username}, "not_a_member"),
        ({"action": "ack", "topic_name": private, "seq": 1}, "not_a_member"),
        ({"action": "create", "topic_name": public}, "already_exists"),
        ({"action": "create", "topic_name": alice.username}, "already_exists"),
    ]
    for i, (frame, code) in enumerate(cases):
        reply = await error_for(client, {**frame, "ref": i})
        assert without_message(reply) == {
            "action": frame["action"],
            "result": "error",
            "error": code,
            "topic_name": frame["topic_name"],
            "ref": i,
        }
        await alive(client)
    # None of it changed anything.
    reply = await client.request("list_topics")
    names = {row["topic_name"]: row for row in reply["topics"]}
    assert private not in names
    assert names[public]["members"] == 1 and names[public]["member"] is False


async def test_unknown_topics_and_users(hub: Harness, connect: Connect) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    client = await connect(alice)
    nobody = unique("nobody")
    cases: list[dict[str, Any]] = [
        {"action": "subscribe", "topic_name": nobody},
        {"action": "suscribe", "topic_name": nobody},
        {"action": "unsubscribe", "topic_name": nobody},
        {"action": "invite", "topic_name": nobody, "username": alice.username},
        {"action": "invite", "topic_name": topic, "username": nobody},
        {"action": "message", "topic_name": nobody, "content": "anyone?"},
        {"action": "history", "topic_name": nobody},
        {"action": "ack", "topic_name": nobody, "seq": 1},
        # Names that can never exist: not found, not a crash.
        {"action": "subscribe", "topic_name": "dm:a:b"},
        {"action": "message", "topic_name": "no spaces allowed", "content": 1},
        {"action": "history", "topic_name": "\u0000"},
        {"action": "message", "topic_name": "ñandú", "content": 1},
        {"action": "invite", "topic_name": topic, "username": "bad name"},
    ]
    for i, frame in enumerate(cases):
        reply = await error_for(client, {**frame, "ref": f"nf{i}"})
        assert without_message(reply) == {
            "action": frame["action"],
            "result": "error",
            "error": "not_found",
            "topic_name": frame["topic_name"],
            "ref": f"nf{i}",
        }
        await alive(client)


# -- size limits --------------------------------------------------------------------------------


def padded_ping(size: int, ref: str) -> str:
    head = f'{{"action": "ping", "ref": "{ref}", "pad": "'
    text = head + "x" * (size - len(head) - 2) + '"}'
    assert len(text.encode()) == size
    return text


async def test_a_frame_at_the_limit_is_accepted(hub: Harness, connect: Connect) -> None:
    client = await connect(hub.account())
    await client.send(padded_ping(MAX_FRAME, "edge"))
    assert await client.recv(10) == {"action": "ping", "result": "ok", "ref": "edge"}


async def test_an_oversized_frame_closes_with_1009(hub: Harness, connect: Connect) -> None:
    alice = hub.account("alice")
    topic = hub.topic(alice)
    victim = await connect(alice)
    other = await connect(alice)  # another connection of the same user
    await victim.send(padded_ping(MAX_FRAME + 1, "too-big"))
    with pytest.raises(ConnectionClosed):
        await victim.recv(10)
    assert victim.ws.close_code == 1009
    # Only that connection ended: the user's other one works, and so does a new one.
    await alive(other)
    reply = await other.request("message", topic_name=topic, content="still here")
    assert reply["result"] == "ok" and reply["seq"] == 1
    await server_alive(hub)


async def test_a_huge_frame_closes_with_1009(hub: Harness, connect: Connect) -> None:
    client = await connect(hub.account())
    with pytest.raises(ConnectionClosed):
        # The server refuses the frame from its header, so the close can arrive while the
        # client is still sending the rest of it: then the send is what raises.
        await client.send(padded_ping(1024 * 1024, "huge"))
        await client.recv(10)
    assert client.ws.close_code == 1009
    await server_alive(hub)


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(
    hub: Harness, connect: Connect
) -> None:
    client = await connect(hub.account())
    await client.ws.send(b'{"action": "ping", "ref": "\xff"}', text=True)
    with pytest.raises(ConnectionClosed):
        await client.recv(10)
    assert client.ws.close_code == 1007
    await server_alive(hub)


async def test_content_over_the_message_size_gets_too_large(hub: Harness, connect: Connect) -> None:
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    a, b = await connect(alice), await connect(bob)
    assert (await b.request("subscribe", topic_name=topic))["result"] == "ok"

    # The limit counts the JSON-encoded content in UTF-8 bytes: "..." adds 2.
    at_limit = "x" * (MAX_CONTENT - 2)
    reply = await a.request("message", topic_name=topic, content=at_limit, id="fits")
    assert reply == {
        "action": "message",
        "result": "ok",
        "topic_name": topic,
        "seq": 1,
        "id": "fits",
        "ref": reply["ref"],
    }
    for over in (
        "x" * (MAX_CONTENT - 1),
        "é" * (MAX_CONTENT // 2),  # 2 bytes each: fewer characters than the limit, more bytes
        {"list": ["y" * 1000] * 40},
        "z" * 60000,  # still within one frame
    ):
        reply = await error_for(
            a, {"action": "message", "topic_name": topic, "content": over, "ref": "big"}
        )
        assert without_message(reply) == {
            "action": "message",
            "result": "error",
            "error": "too_large",
            "topic_name": topic,
            "ref": "big",
        }
        await alive(a)
    # Multi-byte characters right at the limit fit.
    reply = await a.request("message", topic_name=topic, content="é" * (MAX_CONTENT // 2 - 1))
    assert reply["result"] == "ok" and reply["seq"] == 2
    # Direct messages have the same limit.
    reply = await error_for(
        a,
        {"action": "message", "topic_name": bob.username, "content": "x" * MAX_CONTENT, "ref": "d"},
    )
    assert reply["error"] == "too_large" and reply["topic_name"] == bob.username
    await alive(a)
    # Nothing too large was stored or delivered: bob got exactly seq 1 and 2.
    first, second = await b.events(2)
    assert (first["seq"], first["content"]) == (1, at_limit)
    assert second["seq"] == 2
    reply = await b.request("history", topic_name=topic)
    assert [m["seq"] for m in reply["messages"]] == [1, 2]


# -- rate limit -------------------------------------------------------------------------------


async def test_a_message_flood_gets_rate_limited(tmp_path: Path, backend: Backend) -> None:
    server = start_server(tmp_path, *backend.args, "--rate-limit", "5", "--rate-burst", "5")
    limited = Harness(server)
    opened: list[WsClient] = []
    try:
        alice, bob, carol = (
            limited.account("alice"),
            limited.account("bob"),
            limited.account("carol"),
        )
        topic = limited.topic(alice)
        a = await limited.connect(alice)
        b = await limited.connect(bob)
        opened += [a, b]
        assert (await b.request("subscribe", topic_name=topic))["result"] == "ok"

        flood = 100
        for i in range(flood):
            await a.send({"action": "message", "topic_name": topic, "content": i, "ref": i})
        accepted: list[tuple[int, int]] = []
        limited_refs: list[int] = []
        for i in range(flood):
            reply = await a.reply(i, seconds=30)
            if reply["result"] == "ok":
                assert reply == {
                    "action": "message",
                    "result": "ok",
                    "topic_name": topic,
                    "seq": reply["seq"],
                    "ref": i,
                }
                accepted.append((i, reply["seq"]))
            else:
                assert without_message(reply) == {
                    "action": "message",
                    "result": "error",
                    "error": "rate_limited",
                    "topic_name": topic,
                    "ref": i,
                }
                limited_refs.append(i)
        # The burst went through, then the limit hit; refused messages took no seq.
        assert len(accepted) >= 5
        assert limited_refs, "a flood of 100 messages at 5/s was never limited"
        assert [seq for _, seq in accepted] == list(range(1, len(accepted) + 1))
        assert [i for i, _ in accepted[:5]] == [0, 1, 2, 3, 4]

        # Alice's connection and bob's received exactly the accepted messages, in order.
        events = await a.events(len(accepted), seconds=10)
        assert [(e["content"], e["seq"]) for e in events] == accepted
        got = await b.events(len(accepted), seconds=10)
        assert [(e["content"], e["seq"]) for e in got] == accepted

        # The limit is per user: carol's first message goes through at once.
        c = await limited.connect(carol)
        opened.append(c)
        assert (await c.request("subscribe", topic_name=topic))["result"] == "ok"
        reply = await c.request("message", topic_name=topic, content="carol")
        assert reply["result"] == "ok" and reply["seq"] == len(accepted) + 1

        # Alice gets through again once tokens refill.
        deadline = time.monotonic() + timeout(30)
        while True:
            reply = await a.request("message", topic_name=topic, content="later")
            if reply["result"] == "ok":
                break
            assert reply["error"] == "rate_limited"
            assert time.monotonic() < deadline, "the rate limit never let alice through again"
            await asyncio.sleep(0.3)
        assert reply["seq"] == len(accepted) + 2
        await alive(a)
        await alive(b)
    finally:
        for client in opened:
            await client.close()
        limited.http.close()
        assert server.stop() == 0
