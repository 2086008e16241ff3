"""bench/replayrecv.c, the pending-replay benchmark's C reader, counts what it is sent
correctly: a small server here answers its handshake over a real socket and writes the
replay in the same burst as the response (as topichub does), and its JSON report is
checked against what was sent. The quick benchmark (test_bench_smoke.py) runs it against
the real server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import fanrecv

from .test_fanrecv import server_frame

RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def event(topic: str, seq: int, pending: bool = True) -> bytes:
    return server_frame(
        1,
        b'{"event":"message","topic_name":"%s","from":"w","content":"x","seq":%d,'
        b'"sent_at":"2026-11-29T00:00:00.000Z","direct":false,"pending":%s}'
        % (topic.encode(), seq, b"true" if pending else b"false"),
    )


def connected(pending: int) -> bytes:
    return server_frame(1, b'{"event":"connected","username":"reader","pending":%d}' % pending)


class Server:
    """Accepts one connection, checks its upgrade request, writes ``response`` and what
    follows it at once, then keeps what the client sends back."""

    def __init__(self, burst: bytes, then: bytes = b"") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request = b""
        self.received = b""
        self.thread = threading.Thread(target=self._serve, args=(burst, then), daemon=True)
        self.thread.start()

    def _serve(self, burst: bytes, then: bytes) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(4096)
            conn.sendall(burst)
            if then:
                conn.sendall(then)
            conn.settimeout(5)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
            except OSError:
                pass


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fanrecv.build(tmp_path_factory.mktemp("replayrecv"), "replayrecv")


def run(binary: Path, server: Server, expected: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "127.0.0.1", str(server.port), "/tok", str(expected), str(os.getpid())],
        capture_output=True,
        text=True,
        timeout=30,
    )


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def burst(*frames: bytes) -> bytes:
    return RESPONSE + b"".join(frames)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.listener.close()


def test_counts_a_replay_sent_with_the_handshake_response(
    binary: Path, servers: list[Server]
) -> None:
    frames = [connected(6)] + [event(t, s) for t in ("a", "b") for s in (1, 2, 3)]
    server = Server(burst(*frames))
    servers.append(server)
    got = report(run(binary, server, 6))
    assert server.request.startswith(b"GET /tok HTTP/1.1\r\n")
    assert b"Upgrade: websocket\r\n" in server.request
    assert got["topics"] == [["a", 1, 3, 3, 0], ["b", 1, 3, 3, 0]]
    assert (got["received"], got["pending_announced"], got["pending_flags"]) == (6, 6, 6)
    assert (got["extra"], got["other_events"], got["close_code"]) == (0, 0, 0)
    assert got["connect_ns"] <= got["connected_ns"] <= got["first_ns"] <= got["last_ns"]
    server.thread.join(10)
    assert server.received.startswith(b"\x88\x82")  # a masked close frame, 2-byte payload


def test_reports_seqs_out_of_order_extra_messages_and_unflagged_ones(
    binary: Path, servers: list[Server]
) -> None:
    frames = [connected(4), event("a", 1), event("a", 3), event("a", 2), event("a", 4, False)]
    late = event("a", 5)  # after the expected 4: the replay held more than was pending
    server = Server(burst(*frames), then=late)
    servers.append(server)
    got = report(run(binary, server, 4))
    assert got["topics"] == [["a", 1, 4, 4, 3]]  # 1, then 3, 2 and 4 each not the next
    assert got["pending_flags"] == 3
    assert got["extra"] == 1


def test_a_refused_handshake_stops_it_loudly(binary: Path, servers: list[Server]) -> None:
    server = Server(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}")
    servers.append(server)
    done = run(binary, server, 1)
    assert done.returncode == 2
    assert "the handshake was refused: HTTP/1.1 401 Unauthorized" in done.stderr


def test_a_replay_that_stops_short_is_an_error(binary: Path, servers: list[Server]) -> None:
    server = Server(burst(connected(3), event("a", 1), server_frame(8, b"\x03\xe8")))
    servers.append(server)
    done = run(binary, server, 3)
    assert done.returncode == 0  # a close is reported, not a crash
    got = report(done)
    assert (got["received"], got["close_code"]) == (1, 1000)
