"""bench/connopen.c, the connections benchmark's C client, opens and holds what it is asked
to: a small server here accepts its connections over real sockets, answers each upgrade
with 101 and a `connected` event (optionally cut across writes, refused, or dropped
first), and the client's reports are checked against what the server saw. The quick
benchmark (test_bench_smoke.py) runs it against the real server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import fanrecv

from .test_fanrecv import server_frame
from .test_replayrecv import RESPONSE, connected

Answer = Callable[[socket.socket, int, bytes], bool]  # False: the connection was dropped


class Server:
    """Accepts connections in a thread; ``answer(conn, index, request)`` replies to each
    upgrade request. Keeps every accepted socket and what each sent after its request."""

    def __init__(self, answer: Answer) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.answer = answer
        self.requests: list[bytes] = []
        self.peers: list[str] = []
        self.open: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            index = len(self.requests)
            self.requests.append(request)
            self.peers.append(peer[0])
            # Listed before the answer: the client reports the connection open as soon as
            # it has the answer, and a test may then reach for it.
            self.open.append(conn)
            try:
                answered = self.answer(conn, index, request)
            except OSError:  # close() came first: the test is over
                return
            if not answered:
                self.open.remove(conn)
                conn.close()

    def received(self, conn: socket.socket) -> bytes:
        conn.settimeout(5)
        data = b""
        try:
            while chunk := conn.recv(4096):
                data += chunk
        except OSError:
            pass
        return data

    def close(self) -> None:
        self.listener.close()
        for conn in self.open:
            conn.close()


def accept_all(conn: socket.socket, index: int, request: bytes) -> bool:
    conn.sendall(RESPONSE + connected(0))
    return True


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fanrecv.build(tmp_path_factory.mktemp("connopen"), "connopen")


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


def start(
    binary: Path, server: Server, tmp_path: Path, count: int, concurrency: int = 4, ips: int = 1
) -> subprocess.Popen[str]:
    targets = tmp_path / "targets"
    targets.write_text("".join(f"/token{i}\n" for i in range(count)))
    args = [str(server.port), str(targets), str(concurrency), str(ips), str(os.getpid())]
    return subprocess.Popen(
        [str(binary), "127.0.0.1", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def opened(proc: subprocess.Popen[str]) -> dict[str, float]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return dict(json.loads(line))


def alive(proc: subprocess.Popen[str]) -> dict[str, int]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("alive\n")
    proc.stdin.flush()
    return dict(json.loads(proc.stdout.readline()))


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(10) == 0


def test_opens_every_target_once_and_holds_them(
    binary: Path, servers: list[Server], tmp_path: Path
) -> None:
    server = Server(accept_all)
    servers.append(server)
    proc = start(binary, server, tmp_path, 20, ips=3)
    got = opened(proc)
    assert got["retries"] == 0
    assert got["start_ns"] <= got["done_ns"]
    assert sorted(r.split(b" ")[1] for r in server.requests) == sorted(
        f"/token{i}".encode() for i in range(20)
    )
    assert all(b"Upgrade: websocket\r\nConnection: Upgrade\r\n" in r for r in server.requests)
    assert set(server.peers) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    assert alive(proc) == {"alive": 20, "events": 0}
    # A ping is answered (masked pong, same payload); a close is counted.
    first, second = server.open[0], server.open[1]
    first.sendall(server_frame(9, b"hi"))
    second.sendall(server_frame(8, b"\x03\xe8"))
    time.sleep(0.3)
    assert alive(proc) == {"alive": 19, "events": 0}
    first.sendall(server_frame(1, b'{"event":"invited"}'))
    time.sleep(0.3)
    assert alive(proc)["events"] == 1
    finish(proc)
    assert (
        server.received(first)
        == b"\x8a\x82\x00\x00\x00\x00hi" + b"\x88\x82\x00\x00\x00\x00\x03\xe8"
    )


def test_a_response_cut_across_writes(binary: Path, servers: list[Server], tmp_path: Path) -> None:
    def slowly(conn: socket.socket, index: int, request: bytes) -> bool:
        reply = RESPONSE + connected(0)
        for cut in (10, len(RESPONSE) - 2, len(RESPONSE) + 1, len(reply)):
            conn.sendall(reply[:cut])
            reply = reply[cut:]
            time.sleep(0.01)
        return True

    server = Server(slowly)
    servers.append(server)
    proc = start(binary, server, tmp_path, 3)
    assert opened(proc)["retries"] == 0
    assert alive(proc) == {"alive": 3, "events": 0}
    finish(proc)


def test_a_dropped_connection_is_retried(
    binary: Path, servers: list[Server], tmp_path: Path
) -> None:
    server = Server(lambda conn, index, request: index != 1 and accept_all(conn, index, request))
    servers.append(server)
    proc = start(binary, server, tmp_path, 5, concurrency=1)
    assert opened(proc)["retries"] == 1
    assert len(server.requests) == 6
    # The retry goes behind the targets still waiting.
    targets = [r.split(b" ")[1] for r in server.requests]
    assert targets == [b"/token0", b"/token1", b"/token2", b"/token3", b"/token4", b"/token1"]
    assert alive(proc) == {"alive": 5, "events": 0}
    finish(proc)


def test_a_refused_handshake_stops_it(binary: Path, servers: list[Server], tmp_path: Path) -> None:
    def refuse(conn: socket.socket, index: int, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
        return True

    server = Server(refuse)
    servers.append(server)
    proc = start(binary, server, tmp_path, 2)
    assert proc.wait(10) == 2
    assert proc.stderr is not None
    assert "the handshake was refused: HTTP/1.1 401 Unauthorized" in proc.stderr.read()


def test_a_server_that_always_drops_stops_it(
    binary: Path, servers: list[Server], tmp_path: Path
) -> None:
    server = Server(lambda conn, index, request: False)
    servers.append(server)
    proc = start(binary, server, tmp_path, 1)
    assert proc.wait(10) == 2
    assert proc.stderr is not None
    assert "closed before connected, 5 times" in proc.stderr.read()
    assert len(server.requests) == 5


def test_a_frame_over_its_buffer_stops_it(
    binary: Path, servers: list[Server], tmp_path: Path
) -> None:
    """A frame that cannot fit its 4 KiB buffer is an error, not a close."""
    server = Server(accept_all)
    servers.append(server)
    proc = start(binary, server, tmp_path, 1)
    opened(proc)
    server.open[0].sendall(server_frame(1, b"x" * 5000))
    assert proc.wait(10) == 2
    assert proc.stderr is not None
    assert "a frame over this client's 4 KiB buffer" in proc.stderr.read()
