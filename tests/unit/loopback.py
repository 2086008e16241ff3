"""A real ``Connection`` on one end of a real socket pair, driven by asyncio's own
transport, as the server has it after the handshake; and a reader of what it wrote."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from websockets.protocol import State

from topichub.gateway.connection import Connection, WriteCoalescer
from topichub.models import User


class NoSession:
    """The connection never gets as far as asking its session anything here, but for
    telling it that it ended."""

    def connection_ended(self, conn: Connection) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected session call: {name}")


def _frame_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """(header size, payload size) of the frame at ``pos``; None until its header is in."""
    if pos + 2 > len(data):
        return None
    length, header = data[pos + 1] & 0x7F, 2
    if length >= 126:
        header = 4 if length == 126 else 10
        if pos + header > len(data):
            return None
        length = int.from_bytes(data[pos + 2 : pos + header], "big")
    return header, length


def whole_frames(data: bytes) -> int:
    """How many bytes at the front of ``data`` are whole frames (the next may be arriving)."""
    pos = 0
    while (frame := _frame_at(data, pos)) and pos + sum(frame) <= len(data):
        pos += sum(frame)
    return pos


def read_frames(data: bytes) -> list[bytes]:
    """The payloads of unmasked server frames, which must tile ``data`` exactly."""
    payloads, pos = [], 0
    while pos < len(data):
        frame = _frame_at(data, pos)
        assert frame is not None, f"a frame cut short at byte {pos}"
        header, length = frame
        assert data[pos] == 0x81, f"not a text frame at byte {pos}: the stream is mixed up"
        payloads.append(data[pos + header : pos + header + length])
        pos += header + length
    assert pos == len(data)
    return payloads


async def open_connection(
    coalescer: WriteCoalescer | None = None,
    username: str = "reader",
    session: Any = None,
    cls: type[Connection] = Connection,
) -> tuple[Connection, socket.socket]:
    ours, peer = socket.socketpair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    loop = asyncio.get_running_loop()
    conn = cls(
        session or NoSession(),
        coalescer or WriteCoalescer(),
        set(),
        max_frame_bytes=1 << 20,
        buffer_limit=1 << 24,
    )
    await loop.connect_accepted_socket(lambda: conn, ours)
    # As after an accepted handshake and the pending replay.
    conn.user = User(42, username, "", False, 0)
    conn.username = username
    conn.protocol.state = State.OPEN
    conn.open = True
    conn.finish_replay({})
    return conn, peer
