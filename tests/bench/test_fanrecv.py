"""bench/fanrecv.c, the fan-out benchmark's C subscriber reader, counts what it is given
correctly: it is fed real server frames over real sockets here (one end of a socket pair
is what fanrecv reads, the test writes the other), and its answers are checked against
what was sent. The quick benchmark (test_bench_smoke.py) runs it against the real servers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from bench import fanrecv
from bench.common import content_now
from bench.fanrecv import FanRecv


def server_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked, unfragmented server frame."""
    if len(payload) < 126:
        header = bytes([0x80 | opcode, len(payload)])
    elif len(payload) < 65536:
        header = bytes([0x80 | opcode, 126]) + len(payload).to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127]) + len(payload).to_bytes(8, "big")
    return header + payload


def message(seq: int, content: bytes | None = None) -> bytes:
    content = content if content is not None else content_now()
    return server_frame(
        1,
        b'{"event":"message","topic_name":"fan","seq":%d,"content":"%s","pending":false}'
        % (seq, content),
    )


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fanrecv.build(tmp_path_factory.mktemp("fanrecv"))


class Fed:
    """fanrecv reading ``n`` sockets whose other ends the test writes."""

    def __init__(self, binary: Path, n: int) -> None:
        self.progress: list[tuple[int, int]] = []
        self.recv = FanRecv(str(binary), lambda w, t: self.progress.append((w, t)))
        pairs = [socket.socketpair() for _ in range(n)]
        self.ours = [ours for ours, _ in pairs]
        self.recv.start([theirs.fileno() for _, theirs in pairs])
        for _, theirs in pairs:
            theirs.close()  # fanrecv holds its own copy now

    async def until(self, watermark: int) -> None:
        deadline = time.monotonic() + 10
        while not self.progress or self.progress[-1][0] < watermark:
            assert time.monotonic() < deadline, self.progress
            await asyncio.sleep(0.01)


async def test_counts_every_seq_and_reports_the_watermark(binary: Path) -> None:
    fed = Fed(binary, 3)
    await fed.recv.connect()
    await fed.recv.start_latency()
    for seq in range(5, 9):
        for sock in fed.ours:
            sock.sendall(message(seq))
    await fed.until(8)
    assert fed.progress[-1] == (8, 12)  # every subscriber has 5..8: 12 receipts
    latencies = await fed.recv.stop_latency()
    assert len(latencies) == 12
    assert all(0 < ns < 10 * 10**9 for ns in latencies), latencies
    summaries = await fed.recv.end()
    assert [(s.first, s.last, s.count, s.errors) for s in summaries] == [(5, 8, 4, 0)] * 3


async def test_a_frame_cut_across_reads_and_a_long_frame_are_read_whole(binary: Path) -> None:
    fed = Fed(binary, 1)
    await fed.recv.connect()
    (sock,) = fed.ours
    first = message(1)
    sock.sendall(first[:3])
    await asyncio.sleep(0.05)
    sock.sendall(first[3:] + message(2, content_now() + b"y" * 70_000)[:100])
    await asyncio.sleep(0.05)
    sock.sendall(message(2, content_now() + b"y" * 70_000)[100:])
    await fed.until(2)
    (summary,) = await fed.recv.end()
    assert (summary.first, summary.last, summary.count, summary.errors) == (1, 2, 2, 0)


async def test_gaps_and_duplicates_are_counted_as_errors(binary: Path) -> None:
    fed = Fed(binary, 2)
    await fed.recv.connect()
    good, bad = fed.ours
    for seq in (1, 2, 3):
        good.sendall(message(seq))
    for seq in (1, 3, 3):  # 2 missing, 3 twice
        bad.sendall(message(seq))
    await asyncio.sleep(0.2)
    assert fed.progress[-1][0] == 1  # only seq 1 reached both
    summaries = await fed.recv.end()
    assert (summaries[0].count, summaries[0].errors) == (3, 0)
    assert (summaries[1].count, summaries[1].errors) == (3, 2)
    assert summaries[1].anomalies == [(2, 3), (4, 3)]  # (expected, got)


async def test_pings_are_answered_and_a_close_is_recorded(binary: Path) -> None:
    fed = Fed(binary, 2)
    await fed.recv.connect()
    pinged, closed = fed.ours
    pinged.sendall(server_frame(9, b"hi") + server_frame(1, b"2"))  # WebSocket, Engine.IO
    pinged.settimeout(5)
    answer = b""
    while len(answer) < 2 * 6 + 2 + 1:
        answer += pinged.recv(100)
    # Masked (with a zero key) client frames: a pong with the ping's payload, then "3".
    assert answer == bytes([0x8A, 0x82, 0, 0, 0, 0]) + b"hi" + bytes([0x81, 0x81, 0, 0, 0, 0, 0x33])
    closed.sendall(server_frame(8, (1013).to_bytes(2, "big") + b"too slow"))
    closed.settimeout(5)
    assert closed.recv(100) == bytes([0x88, 0x82, 0, 0, 0, 0]) + (1013).to_bytes(2, "big")
    summaries = await fed.recv.end()
    assert [s.close_code for s in summaries] == [0, 1013]


async def test_what_it_cannot_read_stops_it_loudly(binary: Path) -> None:
    fed = Fed(binary, 1)
    await fed.recv.connect()
    (sock,) = fed.ours
    sock.sendall(bytes([0x01, 0x03]) + b"abc")  # a fragmented message: not a fan-out's
    assert fed.recv.proc is not None
    assert await asyncio.to_thread(fed.recv.proc.wait, 5) == 2
    with pytest.raises(RuntimeError, match="fanrecv exited"):
        await fed.recv.end()
