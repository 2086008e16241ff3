"""Stopping the server: SIGTERM drains (DESIGN.md, "SIGTERM drains"), SIGKILL loses nothing
that was acknowledged (PROTOCOL.md, "Pending messages and delivery guarantees").

Each test runs its own ``topichub serve`` process, stops it with a real signal and starts it
again on the same data directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

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


@dataclass
class Node:
    server: ServerProcess
    harness: Harness

    def url(self, account: Account, query: str = "") -> str:
        return f"{self.server.ws_url}/{account.token}{query}"

    def subscribe(self, account: Account, topic: str) -> None:
        r = self.harness.http.put(
            f"/api/v1/topics/{topic}/members/{account.username}",
            headers=self.harness.auth(account),
        )
        assert r.status_code in (200, 201, 204), r.text


def run_node(tmp_path: Path, *args: str) -> Iterator[Node]:
    server = start_server(tmp_path, "--rate-limit", "0", *args)
    harness = Harness(server)
    try:
        yield Node(server, harness)
    finally:
        harness.http.close()
        server.stop()


class RawClient:
    """A WebSocket client on a bare socket: it reads what the server sends but never
    answers a close frame, so the server's drain has to wait for it (up to its close
    timeout) and the drain can be watched from outside."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, token: str) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /{token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(30))
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload) from the server (server frames are not masked)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout(30))
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.transport.abort()


async def cannot_connect(url: str) -> str:
    """How a new WebSocket connection attempt failed; fails the test if it succeeded."""
    try:
        ws = await connect(url, open_timeout=timeout(10))
    except (OSError, InvalidHandshake, TimeoutError) as error:
        return type(error).__name__
    await ws.close()
    raise AssertionError("a new connection was accepted while the server was draining")


# -- SIGTERM ------------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path, backend: Backend) -> Iterator[Node]:
    yield from run_node(tmp_path, *backend.args)


@pytest.fixture
def lazy_cursor_node(tmp_path: Path, backend: Backend) -> Iterator[Node]:
    # Cursors are never saved on a timer here: only the shutdown path can save them.
    # A big outbound buffer lets a client that stopped reading stay connected with a full
    # send buffer (rather than be closed as too slow) until the SIGTERM.
    yield from run_node(
        tmp_path,
        "--cursor-flush-ms",
        "3600000",
        "--outbound-buffer-bytes",
        str(64 * 1024 * 1024),
        *backend.args,
    )


async def test_sigterm_drains(lazy_cursor_node: Node) -> None:
    """SIGTERM: every client gets 1012, no new connection is accepted while the drain
    runs, the process exits 0 (even with a client that stopped reading, its send buffer
    full), and after a restart nothing already delivered is replayed while what was not
    delivered still is."""
    node = lazy_cursor_node
    h = node.harness
    alice = h.account("alice")
    members = [h.account("member") for _ in range(3)]
    manual, offline, stuck = h.account("manual"), h.account("offline"), h.account("stuck")
    topic = h.topic(alice)
    for account in (*members, manual, offline, stuck):
        node.subscribe(account, topic)

    # A client that stops reading while a few MB are sent to it, in a topic of its own.
    bulk, sleeper = h.topic(alice), h.account("sleeper")
    node.subscribe(sleeper, bulk)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", node.server.ws_port))
    sock.setblocking(False)
    sleeping = await connect(node.url(sleeper), sock=sock, max_queue=1, open_timeout=timeout(30))
    pub_ws, pub_s = await open_ws(node.url(alice))
    blob = "z" * 30_000
    for n in range(160):
        reply = await request(pub_ws, pub_s, "message", topic_name=bulk, content=[n, blob])
        assert reply["result"] == "ok"
    await disconnect(pub_ws, pub_s)

    clients: list[tuple[Account, ClientConnection, Session]] = []
    for account, query in [(alice, ""), *((m, "") for m in members), (manual, "?ack=manual")]:
        ws, session = await open_ws(node.url(account, query))
        clients.append((account, ws, session))
    raw = await RawClient.connect(node.server.ws_port, stuck.token)
    opcode, payload = await raw.frame()
    assert opcode == 1 and orjson.loads(payload)["event"] == "connected"

    _, alice_ws, alice_s = clients[0]
    for n in range(30):
        reply = await request(alice_ws, alice_s, "message", topic_name=topic, content=n)
        assert reply["result"] == "ok" and reply["seq"] == n + 1
    for _, ws, session in clients:
        await read_events(ws, session, 30)
        assert session.seqs == list(range(1, 31))
    _, manual_ws, manual_s = clients[-1]
    assert (await request(manual_ws, manual_s, "ack", topic_name=topic, seq=10))["result"] == "ok"
    for _ in range(30):  # the raw client reads its 30 messages too
        opcode, _payload = await raw.frame()
        assert opcode == 1

    node.server.signal(signal.SIGTERM)
    sigterm = time.monotonic()
    for account, ws, session in clients:
        await read_until_closed(ws, session)
        assert session.close_code == 1012, (account.username, session.close_code)
        assert ws.close_reason, "the 1012 close should say why"
        assert len(session.events) == 30  # nothing more arrived, nothing was repeated

    # The raw client gets its 1012 too, and does not answer: the drain waits for it.
    opcode, payload = await raw.frame()
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1012, payload
    assert node.server.process is not None and node.server.process.poll() is None
    refused = await cannot_connect(node.url(members[0]))
    with contextlib.suppress(httpx.TransportError):
        health = h.http.get("/healthz", timeout=timeout(10))
        assert health.status_code == 503, health.text
    assert node.server.process.poll() is None, "the drain ended before the checks ran"
    print(f"\nnew connection during the drain: {refused}")

    assert await asyncio.to_thread(node.server.wait, 60) == 0, node.server.text()
    print(f"drain took {time.monotonic() - sigterm:.1f} s")
    raw.close()
    sleeping.transport.abort()
    assert "topichub: stopped" in node.server.text()

    node.server.start()
    h.refresh()
    expected = {alice.username: 0, manual.username: 20, offline.username: 30}
    expected |= {m.username: 0 for m in members}
    for account, query in [
        (alice, ""),
        *((m, "") for m in members),
        (manual, "?ack=manual"),
        (offline, ""),
    ]:
        ws, session = await open_ws(node.url(account, query))
        assert session.hello["pending"] == expected[account.username], account.username
        await read_events(ws, session, session.hello["pending"])
        assert session.seqs == list(range(31 - session.hello["pending"], 31))
        await disconnect(ws, session)


async def test_sigterm_while_clients_connect(node: Node) -> None:
    """Clients connecting in a loop while SIGTERM arrives: the process still exits 0, and
    each connection that opened ends with 1012 (or was refused at the handshake)."""
    h = node.harness
    users = [h.account("c") for _ in range(4)]
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()

    async def churn(account: Account) -> None:
        while not stop.is_set():
            try:
                ws = await connect(node.url(account), open_timeout=timeout(10))
            except (OSError, InvalidHandshake, TimeoutError) as error:
                key = f"refused:{type(error).__name__}"
                outcomes[key] = outcomes.get(key, 0) + 1
                await asyncio.sleep(0.01)
                continue
            session = Session()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(read_until_closed(ws, session), 0.05)
            if session.close_code is None:
                await ws.close()
                key = "closed by client"
            else:
                assert session.close_code == 1012, session.close_code
                key = "1012"
            outcomes[key] = outcomes.get(key, 0) + 1

    tasks = [asyncio.create_task(churn(u)) for u in users]
    await asyncio.sleep(1)
    node.server.signal(signal.SIGTERM)
    code = await asyncio.to_thread(node.server.wait, 60)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    assert code == 0, node.server.text()
    assert outcomes.get("closed by client", 0) > 0
    assert any(key.startswith("refused") for key in outcomes)
    print(f"\nconnection attempts around SIGTERM: {outcomes}")


# -- SIGKILL ------------------------------------------------------------------------------


class StreamPublisher:
    """Publishes numbered messages with a window in flight until its connection dies."""

    def __init__(self, url: str, topic: str, tag: str, window: int = 8) -> None:
        self.url, self.topic, self.tag = url, topic, tag
        self.window = asyncio.Semaphore(window)
        self.acked: dict[int, dict[str, Any]] = {}  # seq -> content
        self.sent = 0

    async def run(self) -> None:
        ws, _ = await open_ws(self.url)

        async def replies() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    data = orjson.loads(frame)
                    if data.get("action") == "message":
                        assert data["result"] == "ok", data
                        self.acked[data["seq"]] = {"p": self.tag, "n": data["ref"]}
                        self.window.release()

        reader = asyncio.create_task(replies())
        try:
            while not reader.done():
                acquire = asyncio.ensure_future(self.window.acquire())
                await asyncio.wait([acquire, reader], return_when=asyncio.FIRST_COMPLETED)
                if not acquire.done():
                    acquire.cancel()
                    break
                content = {"p": self.tag, "n": self.sent}
                frame = {"action": "message", "topic_name": self.topic, "content": content}
                try:
                    await ws.send(orjson.dumps({**frame, "ref": self.sent}).decode())
                except ConnectionClosed:
                    break
                self.sent += 1
        finally:
            await reader


async def test_sigkill_mid_stream_loses_no_acked_message(node: Node) -> None:
    """Several publishers stream into a topic; SIGKILL; restart. Every publish that got an
    ok reply reaches every member: live before the kill or pending after the restart."""
    h = node.harness
    publishers = [h.account("pub") for _ in range(3)]
    receivers = [h.account("recv") for _ in range(3)]
    offline = h.account("offline")
    topic = h.topic(publishers[0])
    for account in (*publishers[1:], *receivers, offline):
        node.subscribe(account, topic)

    live: dict[str, Session] = {}
    readers = []
    for account in receivers:
        ws, session = await open_ws(node.url(account))
        live[account.username] = session
        readers.append(asyncio.create_task(read_until_closed(ws, session)))
    streams = [StreamPublisher(node.url(p), topic, f"p{i}") for i, p in enumerate(publishers)]
    running = [asyncio.create_task(s.run()) for s in streams]

    # Kill in the middle of the stream, once a good number of publishes are acked.
    while sum(len(s.acked) for s in streams) < 600:
        assert not any(t.done() for t in running), [t.exception() for t in running]
        await asyncio.sleep(0.01)
    node.server.kill()
    await asyncio.wait_for(asyncio.gather(*running, *readers), timeout(60))

    acked: dict[int, dict[str, Any]] = {}
    for stream in streams:
        assert not set(acked) & set(stream.acked), "one seq acked to two publishes"
        acked |= stream.acked
    sent = sum(s.sent for s in streams)

    node.server.start()
    h.refresh()
    report = []
    for account in [*receivers, offline]:
        before = live.get(account.username, Session())
        ws, after = await open_ws(node.url(account))
        await read_events(ws, after, after.hello["pending"])
        assert all(e["pending"] for e in after.events)
        await disconnect(ws, after)
        for session in (before, after):
            seqs = session.seqs
            if seqs:  # in order with no hole on each connection
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), account.username
        received = before.seqs + after.seqs
        missing = sorted(set(acked) - set(received))
        assert not missing, (account.username, len(missing), missing[:20])
        contents = {e["seq"]: e["content"] for e in before.events + after.events}
        for seq, content in acked.items():
            assert contents[seq] == content, (account.username, seq)
        duplicates = len(received) - len(set(received))
        report.append(
            f"{account.username}: live {len(before.seqs)}, pending {len(after.seqs)}, "
            f"duplicates {duplicates}, beyond the acked {len(set(received) - set(acked))}"
        )
    print(f"\nSIGKILL mid-stream: sent {sent}, acked {len(acked)}")
    print("\n".join(report))
