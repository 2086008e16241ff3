"""Delivery guarantees end to end (PROTOCOL.md, "Pending messages and delivery guarantees";
DESIGN.md, "Reconnect without gaps or duplicates" and "Slow consumers").

Every test runs its own ``topichub serve`` process (some restart or kill it) and talks to it
over real sockets. Message contents carry their own number so that what arrives can be
checked against what the publisher was told was stored (its ``ok`` replies with ``seq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import Account, Backend, Harness, start_server
from tests.e2e.sessions import (
    Session,
    disconnect,
    open_ws,
    read_events,
    read_until_closed,
    request,
)
from topichub.testing import ServerProcess, timeout

# -- helpers ------------------------------------------------------------------------------


@dataclass
class Node:
    server: ServerProcess
    harness: Harness

    def url(self, account: Account, query: str = "") -> str:
        return f"{self.server.ws_url}/{account.token}{query}"

    def restart(self, how: str) -> None:
        if how == "graceful":
            assert self.server.stop() == 0, self.server.text()
        else:
            self.server.kill()
        self.server.start()
        self.harness.refresh()


def run_node(tmp_path: Path, *args: str) -> Iterator[Node]:
    server = start_server(tmp_path, "--rate-limit", "0", *args)
    harness = Harness(server)
    try:
        yield Node(server, harness)
    finally:
        harness.http.close()
        server.stop()


@pytest.fixture
def node(tmp_path: Path, backend: Backend) -> Iterator[Node]:
    yield from run_node(tmp_path, *backend.args)


@pytest.fixture
def shared(hub: Harness) -> Node:
    """The session's server, for tests that neither restart it nor need special flags."""
    return Node(hub.server, hub)


def api_publish(node: Node, account: Account, topic: str, content: Any) -> int:
    r = node.harness.http.post(
        f"/api/v1/topics/{topic}/messages",
        json={"content": content},
        headers=node.harness.auth(account),
    )
    assert r.status_code in (200, 201), r.text
    seq = r.json()["seq"]
    assert isinstance(seq, int)
    return seq


def subscribe(node: Node, account: Account, topic: str) -> None:
    r = node.harness.http.put(
        f"/api/v1/topics/{topic}/members/{account.username}", headers=node.harness.auth(account)
    )
    assert r.status_code in (200, 201, 204), r.text


class Publisher:
    """One WebSocket publisher sending numbered messages with a window of requests in
    flight; ``acked`` maps each seq of an ok reply to the number it was sent with."""

    def __init__(self, url: str, topic: str, tag: str, window: int = 16) -> None:
        self.url = url
        self.topic = topic
        self.tag = tag
        self.window = asyncio.Semaphore(window)
        self.acked: dict[int, int] = {}
        self.sent = 0
        self.errors: list[dict[str, Any]] = []
        self._ws: ClientConnection | None = None

    async def run(self, count: int, pause_every: int = 0, pause: float = 0.0) -> None:
        ws, _ = await open_ws(self.url)
        self._ws = ws
        done = asyncio.Event()

        async def replies() -> None:
            async for frame in ws:
                data = orjson.loads(frame)
                if data.get("action") != "message":
                    continue
                if data["result"] != "ok":
                    self.errors.append(data)
                else:
                    self.acked[data["seq"]] = data["ref"]
                self.window.release()
                if len(self.acked) + len(self.errors) == count:
                    done.set()

        reader = asyncio.create_task(replies())
        try:
            for n in range(count):
                await self.window.acquire()
                content = {"p": self.tag, "n": n}
                frame = {"action": "message", "topic_name": self.topic, "content": content}
                await ws.send(orjson.dumps({**frame, "ref": n}).decode())
                self.sent += 1
                if pause_every and n % pause_every == pause_every - 1:
                    await asyncio.sleep(pause)
            await asyncio.wait_for(done.wait(), timeout(120))
        finally:
            reader.cancel()
            await ws.close()
        assert not self.errors, self.errors[:3]


# -- (a) the reconnect race ---------------------------------------------------------------

RACE_MESSAGES = 1000


async def member_loop(
    url: str,
    topic: str,
    stop: asyncio.Event,
    behaviours: list[str],
    *,
    manual: bool,
    seed: int,
) -> list[Session]:
    """Connect, read a little (sometimes nothing: closing in the middle of the replay),
    leave in one of ``behaviours``, stay away a little, again, until ``stop``; then one
    last clean connection that reads the whole pending replay."""
    rng = random.Random(seed)
    sessions: list[Session] = []
    query = "?ack=manual" if manual else ""
    while not stop.is_set():
        how = rng.choice(behaviours)
        ws, session = await open_ws(url + query)
        session.how = how
        sessions.append(session)
        deadline = time.monotonic() + rng.choice([0.0, 0.0, 0.005, 0.02, 0.05, 0.1])
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            session.take(frame)
            if manual and len(session.events) % 7 == 0 and rng.random() < 0.5:
                seq = session.events[-1]["seq"]
                session.acks_sent.append(seq)
                ack = {"action": "ack", "topic_name": topic, "seq": seq}
                await ws.send(orjson.dumps(ack).decode())
        if manual and session.events and how != "abort":
            # Acknowledge what was read and wait for the reply, then leave cleanly.
            seq = session.events[-1]["seq"]
            session.acks_sent.append(seq)
            reply = await request(ws, session, "ack", topic_name=topic, seq=seq)
            assert reply["result"] == "ok", reply
        if how == "disconnect":
            await disconnect(ws, session)
        elif how == "close":
            closing = asyncio.create_task(ws.close())
            await read_until_closed(ws, session)
            await closing
            assert session.close_code == 1000, session.close_code
        else:
            # Abrupt: a TCP reset, with whatever is still unread thrown away.
            assert how == "abort"
            ws.transport.abort()
            await ws.wait_closed()
        await asyncio.sleep(rng.choice([0.0, 0.005, 0.02, 0.05]))
    ws, session = await open_ws(url + query)
    session.how = "final"
    sessions.append(session)
    await read_events(ws, session, session.hello["pending"])
    if manual and session.events:
        session.acks_sent.append(session.events[-1]["seq"])
        await request(ws, session, "ack", topic_name=topic, seq=session.events[-1]["seq"])
    await disconnect(ws, session)
    return sessions


def check_contiguous(session: Session) -> None:
    """One connection sees one topic's seqs in order with no hole and no repeat."""
    seqs = session.seqs
    if seqs:
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (session.how, seqs)


def describe(sessions: list[Session]) -> list[tuple[str, int, int | None, int | None]]:
    """(how it ended, pending, first seq, last seq) per connection, for failure messages."""
    return [
        (s.how, s.hello["pending"], s.seqs[0] if s.seqs else None, s.seqs[-1] if s.seqs else None)
        for s in sessions
    ]


@pytest.fixture
def race_node(tmp_path: Path, backend: Backend) -> Iterator[Node]:
    # Cursors saved every 10 ms: reconnects keep meeting a flush in progress.
    yield from run_node(tmp_path, "--cursor-flush-ms", "10", *backend.args)


@pytest.mark.timeout(400)  # a few seconds alone; much longer on a busy machine
async def test_reconnect_race_no_gap_no_duplicate(race_node: Node) -> None:
    """A publisher hammers a topic while members reconnect in a loop.

    - Members leaving cleanly (``disconnect`` or a normal close, auto ack): across all their
      connections every acknowledged seq arrives exactly once, in order: the concatenation
      of what their connections received is exactly 1..N.
    - A member that also aborts its TCP connection, with ``ack=manual``: no gap, and nothing
      it saw acknowledged (ok reply received) is replayed; a replay of unacknowledged
      messages is allowed (at-least-once).
    - A member that also aborts, with auto ack: a message written to a socket that is then
      reset counts as delivered (PROTOCOL.md), so holes are allowed there; but nothing is
      ever received twice and every connection's stream is in order without holes.
    """
    node = race_node
    h = node.harness
    owner = h.account("pub")
    topic = h.topic(owner)
    clean = [h.account("clean") for _ in range(3)]
    manual_abort = h.account("manual")
    auto_abort = h.account("abort")
    for member in [*clean, manual_abort, auto_abort]:
        subscribe(node, member, topic)

    stop = asyncio.Event()
    loops = [
        asyncio.create_task(
            member_loop(node.url(m), topic, stop, ["disconnect", "close"], manual=False, seed=i)
        )
        for i, m in enumerate(clean)
    ]
    loops.append(
        asyncio.create_task(
            member_loop(
                node.url(manual_abort),
                topic,
                stop,
                ["disconnect", "close", "abort", "abort"],
                manual=True,
                seed=10,
            )
        )
    )
    loops.append(
        asyncio.create_task(
            member_loop(
                node.url(auto_abort),
                topic,
                stop,
                ["disconnect", "abort", "abort"],
                manual=False,
                seed=11,
            )
        )
    )
    publisher = Publisher(node.url(owner), topic, "p", window=8)
    try:
        # Paced to last at least 2 s however fast the commits are, so every member goes
        # through many reconnects while messages arrive.
        await publisher.run(RACE_MESSAGES, pause_every=4, pause=0.008)
    finally:
        stop.set()
    results = await asyncio.wait_for(asyncio.gather(*loops), timeout(180))

    acked = sorted(publisher.acked)
    assert acked == list(range(1, RACE_MESSAGES + 1))

    for member, sessions in zip(clean, results[:3], strict=True):
        assert len(sessions) > 10, f"{member.username}: only {len(sessions)} connections"
        for session in sessions:
            session.check_pending_prefix()
            check_contiguous(session)
        everything = [seq for session in sessions for seq in session.seqs]
        duplicates = len(everything) - len(set(everything))
        missing = sorted(set(acked) - set(everything))
        assert not duplicates and not missing, (
            member.username,
            duplicates,
            missing[:20],
            describe(sessions),
        )
        assert everything == acked  # exactly once, in order
        for session in sessions:
            for event in session.events:
                assert event["content"] == {"p": "p", "n": publisher.acked[event["seq"]]}

    manual_sessions = results[3]
    assert any(s.how == "abort" for s in manual_sessions)
    confirmed = sent = received = 0
    replayed = 0
    for session in manual_sessions:
        session.check_pending_prefix()
        check_contiguous(session)
        if session.seqs:
            first = session.seqs[0]
            # Never a hole: it starts at or before the first seq never received.
            assert first <= received + 1, (session.how, first, received)
            # Nothing acknowledged (reply seen) comes back; an ack sent but unconfirmed
            # before an abort may or may not have reached the server.
            assert confirmed < first <= sent + 1, (session.how, first, confirmed, sent)
            replayed += max(0, received - first + 1)
            received = max(received, session.seqs[-1])
        confirmed = max([confirmed, *session.acks_confirmed])
        sent = max([sent, *session.acks_sent])
    assert received == RACE_MESSAGES
    everything = {seq for session in manual_sessions for seq in session.seqs}
    assert everything == set(acked)

    abort_sessions = results[4]
    assert any(s.how == "abort" for s in abort_sessions)
    everything = [seq for session in abort_sessions for seq in session.seqs]
    for session in abort_sessions:
        session.check_pending_prefix()
        check_contiguous(session)
    assert everything == sorted(set(everything)), "a message was received twice"
    lost = len(acked) - len(everything)
    print(
        f"\nrace: {RACE_MESSAGES} messages; connections per member: "
        f"{[len(s) for s in results]}; manual-ack member re-received {replayed} "
        f"unacknowledged messages; auto-ack aborting member lost {lost} messages "
        "written to reset sockets"
    )


# -- (b) the pending count ----------------------------------------------------------------


async def test_pending_count_equals_pending_events(shared: Node) -> None:
    """``pending`` counts exactly the pending:true events that follow, across topics and
    direct messages, also while a publisher keeps publishing during the handshake."""
    node = shared
    h = node.harness
    alice, bob, carol = h.account("alice"), h.account("bob"), h.account("carol")
    topics = [h.topic(alice) for _ in range(3)]
    for topic in topics:
        subscribe(node, bob, topic)
        subscribe(node, carol, topic)

    expected: list[tuple[str, int]] = []
    for i, topic in enumerate(topics):
        for n in range(i + 2):
            expected.append((topic, api_publish(node, alice, topic, n)))
        # Bob's own messages are in the log but never pending for him.
        api_publish(node, bob, topic, "own")
    r = h.http.post(
        f"/api/v1/users/{bob.username}/messages",
        json={"content": "dm"},
        headers=h.auth(carol),
    )
    assert r.status_code in (200, 201), r.text

    ws, session = await open_ws(node.url(bob))
    assert session.hello["pending"] == len(expected) + 1
    await read_events(ws, session, session.hello["pending"])
    assert all(e["pending"] for e in session.events)
    got = [(e["topic_name"], e["seq"]) for e in session.events if not e["direct"]]
    assert sorted(got) == sorted(expected)
    for topic in topics:  # in seq order per topic
        seqs = [seq for name, seq in got if name == topic]
        assert seqs == sorted(seqs)
    direct = [e for e in session.events if e["direct"]]
    assert [(e["topic_name"], e["from"], e["content"]) for e in direct] == [
        (carol.username, carol.username, "dm")
    ]
    live_seq = api_publish(node, alice, topics[0], "live")
    await read_events(ws, session, len(expected) + 2)
    assert session.events[-1]["seq"] == live_seq and session.events[-1]["pending"] is False
    await disconnect(ws, session)

    # The same count while messages keep arriving during every handshake.
    stop = asyncio.Event()
    publisher = Publisher(node.url(alice), topics[1], "p", window=4)

    async def publish() -> None:
        try:
            await publisher.run(400, pause_every=2, pause=0.003)
        finally:
            stop.set()

    task = asyncio.create_task(publish())
    counts: list[int] = []
    sessions: list[Session] = []
    while not stop.is_set():
        ws, session = await open_ws(node.url(carol))
        sessions.append(session)
        counts.append(session.hello["pending"])
        # Read the replay and at least one live event after it, unless the stream ended.
        while len(session.events) <= session.hello["pending"] and not stop.is_set():
            with_timeout = asyncio.wait_for(ws.recv(), timeout(2))
            try:
                session.take(await with_timeout)
            except TimeoutError:
                break
        await disconnect(ws, session)
        await asyncio.sleep(0.05)
    await task
    assert len(sessions) >= 3 and sum(counts) > 0
    for session in sessions:
        session.check_pending_prefix()
        assert len(session.events) >= session.hello["pending"]
    everything = [e["seq"] for s in sessions for e in s.events if e["topic_name"] == topics[1]]
    # Carol leaves cleanly each time: exactly once, in order, from the topic's first seq.
    assert everything == list(range(1, len(everything) + 1))
    assert len(everything) > len(expected) // 3 + 1


# -- (c) own messages ---------------------------------------------------------------------


async def test_own_messages_are_never_pending(shared: Node) -> None:
    node = shared
    h = node.harness
    alice, bob = h.account("alice"), h.account("bob")
    topic = h.topic(alice)
    subscribe(node, bob, topic)

    ws, session = await open_ws(node.url(alice))
    for n in range(3):
        reply = await request(ws, session, "message", topic_name=topic, content=n)
        assert reply["result"] == "ok"
    await read_events(ws, session, 3)  # her own echoes, live
    assert [e["pending"] for e in session.events] == [False] * 3
    await disconnect(ws, session)

    # Offline: she publishes through REST and sends a direct message; bob writes too.
    own = [api_publish(node, alice, topic, f"rest{n}") for n in range(2)]
    r = h.http.post(
        f"/api/v1/users/{bob.username}/messages", json={"content": "hi"}, headers=h.auth(alice)
    )
    assert r.status_code in (200, 201), r.text
    theirs = api_publish(node, bob, topic, "from bob")
    r = h.http.post(
        f"/api/v1/users/{alice.username}/messages", json={"content": "yo"}, headers=h.auth(bob)
    )
    assert r.status_code in (200, 201), r.text

    r = h.http.get("/api/v1/messages/pending", headers=h.auth(alice))
    assert r.status_code == 200
    assert [m["from"] for m in r.json()["messages"]] == [bob.username, bob.username]

    ws, session = await open_ws(node.url(alice))
    assert session.hello["pending"] == 2
    await read_events(ws, session, 2)
    assert {(e["from"], e["seq"], e["direct"]) for e in session.events} == {
        (bob.username, theirs, False),
        (bob.username, 2, True),
    }
    assert not set(own) & {e["seq"] for e in session.events if not e["direct"]}
    await disconnect(ws, session)

    # Bob, who was never connected, gets all of alice's messages and none of his own.
    ws, session = await open_ws(node.url(bob))
    assert session.hello["pending"] == 3 + len(own) + 1
    await read_events(ws, session, session.hello["pending"])
    assert all(e["from"] == alice.username for e in session.events)
    await disconnect(ws, session)


# -- (d) manual acknowledgement -----------------------------------------------------------


async def test_manual_ack_replays_only_unacked(shared: Node) -> None:
    node = shared
    h = node.harness
    alice, bob = h.account("alice"), h.account("bob")
    topic, other = h.topic(alice), h.topic(alice)
    subscribe(node, bob, topic)
    subscribe(node, bob, other)

    ws, session = await open_ws(node.url(bob, "?ack=manual"))
    seqs = [api_publish(node, alice, topic, n) for n in range(6)]
    await read_events(ws, session, 6)
    assert session.seqs == seqs == [1, 2, 3, 4, 5, 6]
    reply = await request(ws, session, "ack", topic_name=topic, seq=3)
    assert reply["result"] == "ok" and reply["seq"] == 3
    await disconnect(ws, session)

    # 4..6 were written but never acknowledged: replayed.
    ws, session = await open_ws(node.url(bob, "?ack=manual"))
    assert session.hello["pending"] == 3
    await read_events(ws, session, 3)
    assert session.seqs == [4, 5, 6] and all(e["pending"] for e in session.events)
    # Not acked again: replayed again, even after an abrupt close.
    ws.transport.abort()
    await ws.wait_closed()

    ws, session = await open_ws(node.url(bob, "?ack=manual"))
    assert session.hello["pending"] == 3
    await read_events(ws, session, 3)
    assert session.seqs == [4, 5, 6]
    # An ack covers every seq up to it; a seq past the end is cut to the last one.
    reply = await request(ws, session, "ack", topic_name=topic, seq=99)
    assert reply["result"] == "ok" and reply["seq"] == 6
    live = api_publish(node, alice, other, "other")
    await read_events(ws, session, 4)
    assert session.events[-1]["seq"] == live and session.events[-1]["pending"] is False
    # The ok reply is seen, then the socket is reset: the ack still counts.
    reply = await request(ws, session, "ack", topic_name=other, seq=live)
    assert reply["result"] == "ok"
    ws.transport.abort()
    await ws.wait_closed()

    ws, session = await open_ws(node.url(bob, "?ack=manual"))
    assert session.hello["pending"] == 0
    await disconnect(ws, session)
    assert session.events == []

    # With auto ack the same replay is acknowledged by being written.
    seq = api_publish(node, alice, topic, "auto")
    ws, session = await open_ws(node.url(bob))
    assert session.hello["pending"] == 1
    await read_events(ws, session, 1)
    assert session.seqs == [seq]
    await disconnect(ws, session)
    ws, session = await open_ws(node.url(bob, "?ack=manual"))
    assert session.hello["pending"] == 0
    await disconnect(ws, session)

    # Errors: a topic the user is not in, an unknown topic.
    ws, session = await open_ws(node.url(alice, "?ack=manual"))
    stranger = h.topic(bob)
    assert (await request(ws, session, "ack", topic_name=stranger, seq=1))[
        "error"
    ] == "not_a_member"
    assert (await request(ws, session, "ack", topic_name="no-such-topic", seq=1))[
        "error"
    ] == "not_found"
    await disconnect(ws, session)


# -- (e) pending messages survive a restart ------------------------------------------------


async def test_pending_survives_restart(node: Node) -> None:
    """Pending messages (auto ack: not yet written; manual ack: not yet acknowledged) are
    replayed after a graceful restart and after SIGKILL; once delivered, they are not."""
    for how in ("graceful", "kill"):
        await pending_survives_restart(node, how)


async def pending_survives_restart(node: Node, how: str) -> None:
    h = node.harness
    alice, bob, carol, dave = (h.account(p) for p in ("alice", "bob", "carol", "dave"))
    topic = h.topic(alice)
    for member in (bob, carol, dave):
        subscribe(node, member, topic)

    bob_ws, bob_s = await open_ws(node.url(bob))
    carol_ws, carol_s = await open_ws(node.url(carol, "?ack=manual"))
    first = [api_publish(node, alice, topic, f"a{n}") for n in range(3)]
    await read_events(bob_ws, bob_s, 3)
    await read_events(carol_ws, carol_s, 3)
    assert bob_s.seqs == carol_s.seqs == first
    assert (await request(carol_ws, carol_s, "ack", topic_name=topic, seq=2))["result"] == "ok"
    await disconnect(bob_ws, bob_s)
    await disconnect(carol_ws, carol_s)

    second = [api_publish(node, alice, topic, f"b{n}") for n in range(4)]
    node.restart(how)

    expected = {
        bob.username: (bob, "", second),
        carol.username: (carol, "?ack=manual", first[2:] + second),
        dave.username: (dave, "", first + second),
    }
    contents = {seq: f"a{n}" for n, seq in enumerate(first)}
    contents |= {seq: f"b{n}" for n, seq in enumerate(second)}
    for account, query, seqs in expected.values():
        ws, session = await open_ws(node.url(account, query))
        assert session.hello["pending"] == len(seqs), (account.username, session.hello)
        await read_events(ws, session, len(seqs))
        assert session.seqs == seqs, account.username
        assert all(e["pending"] for e in session.events)
        assert [e["content"] for e in session.events] == [contents[s] for s in seqs]
        if query:
            await request(ws, session, "ack", topic_name=topic, seq=seqs[-1])
        await disconnect(ws, session)
    # And delivered ones are not replayed after one more restart.
    node.restart(how)
    for account, query, _ in expected.values():
        ws, session = await open_ws(node.url(account, query))
        assert session.hello["pending"] == 0, account.username
        await disconnect(ws, session)


# -- (f) a slow consumer ------------------------------------------------------------------


# 64 KiB: the limit is the transport's high water itself. 256 KiB: the transport pauses
# writing at 64 KiB first, and the close must still wait until the backlog passes the limit.
@pytest.fixture(params=["65536", "262144"], ids=["limit-64KiB", "limit-256KiB"])
def small_buffer_node(
    request: pytest.FixtureRequest, tmp_path: Path, backend: Backend
) -> Iterator[Node]:
    yield from run_node(tmp_path, "--outbound-buffer-bytes", request.param, *backend.args)


async def test_slow_consumer_closed_1013_others_unaffected(small_buffer_node: Node) -> None:
    """A subscriber that stops reading is closed with 1013 once its send buffer passes the
    limit; the others receive everything; the slow one's next connection gets the rest as
    pending, with no gap."""
    node = small_buffer_node
    h = node.harness
    alice = h.account("alice")
    fast = [h.account("fast") for _ in range(2)]
    slow = h.account("slow")
    topic = h.topic(alice)
    for member in (*fast, slow):
        subscribe(node, member, topic)

    # A small receive window, and the client library stops reading the socket once one
    # message waits unread: TCP backpressure reaches the server quickly.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", node.server.ws_port))
    sock.setblocking(False)
    slow_ws, slow_s = await open_ws(node.url(slow), sock=sock, max_queue=1)

    fast_sessions: list[Session] = []
    fast_tasks = []
    for account in fast:
        ws, session = await open_ws(node.url(account))
        fast_sessions.append(session)

        async def read_all(ws: ClientConnection = ws, session: Session = session) -> None:
            await read_until_closed(ws, session)

        fast_tasks.append((ws, asyncio.create_task(read_all())))

    pub_ws, pub_s = await open_ws(node.url(alice))
    blob = "x" * 30_000
    published: list[int] = []

    async def publish(n: int) -> None:
        # The fast subscribers keep up by definition: the next message goes out once they
        # have all but the last one, so their send buffers never fill, however busy this
        # machine is; only the one that stopped reading falls behind.
        while min(len(s.events) for s in fast_sessions) < len(published) - 1:
            assert all(not task.done() for _, task in fast_tasks), "a fast reader stopped"
            await asyncio.sleep(0.001)
        reply = await request(pub_ws, pub_s, "message", topic_name=topic, content=[n, blob])
        assert reply["result"] == "ok", reply
        published.append(reply["seq"])

    def slow_closed() -> bool:
        return f"closing slow consumer {slow.username} " in node.server.text()

    n = 0
    while not slow_closed():
        assert n < 3000, "the slow consumer was never closed"
        await publish(n)
        n += 1
        if n % 50 == 0:
            await asyncio.sleep(0)  # let the server's log line reach us

    # Read now (its close handshake waits behind the backlog), while more is published.
    slow_reader = asyncio.create_task(read_until_closed(slow_ws, slow_s))
    for _ in range(20):
        await publish(n)
        n += 1
    await asyncio.wait_for(slow_reader, timeout(60))
    assert slow_s.close_code == 1013, slow_s.close_code
    assert slow_s.seqs, "the slow consumer received nothing before being closed"
    check_contiguous(slow_s)
    assert slow_s.seqs[-1] < published[-1]

    # The others were never held back: they got everything, in order, once.
    for (ws, task), session in zip(fast_tasks, fast_sessions, strict=True):
        task.cancel()  # cancelling recv() loses nothing
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await read_events(ws, session, len(published))
        assert session.seqs == published
        await disconnect(ws, session)
    await disconnect(pub_ws, pub_s)

    # Reconnecting, the slow one gets the rest as pending: no gap.
    ws, session = await open_ws(node.url(slow))
    pending = session.hello["pending"]
    await read_events(ws, session, pending)
    session.check_pending_prefix()
    assert session.seqs, "nothing pending after the 1013 close"
    assert session.seqs[0] <= slow_s.seqs[-1] + 1, (slow_s.seqs[-1], session.seqs[0])
    assert session.seqs[-1] == published[-1]
    check_contiguous(session)
    assert set(slow_s.seqs) | set(session.seqs) == set(published)
    metrics = h.http.get("/metrics").text
    assert "topichub_slow_consumers_closed_total 1.0" in metrics
    await disconnect(ws, session)
    print(
        f"\nslow consumer: closed after {len(slow_s.seqs)} of {len(published)} messages; "
        f"{len(session.seqs)} replayed, "
        f"{len(set(slow_s.seqs) & set(session.seqs))} of them a second time"
    )
