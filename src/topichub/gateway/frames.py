"""WebSocket frames (RFC 6455 section 5.2). Server-to-client frames are built once and
written to many sockets: a server's frames are never masked, so the bytes of one event are
the same for every recipient. Client-to-server frames are delimited here for the
connection's fast path (gateway/connection.py). Pure functions, no I/O."""

from __future__ import annotations

import struct

PING_FRAME = b"\x89\x00"  # FIN + ping, no payload
_header_16 = struct.Struct("!BBH").pack  # the 16-bit extended length, network order


def text_frame(payload: bytes) -> bytes:
    """One unfragmented text frame (FIN + opcode 0x1) carrying ``payload``."""
    return text_frame_header(len(payload)) + payload


def text_frame_header(size: int) -> bytes:
    """The header of an unfragmented text frame of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 1 << 16:
        return _header_16(0x81, 126, size)
    return b"\x81\x7f" + size.to_bytes(8, "big")


FAST_TEXT = 0x81  # first byte of an unfragmented text frame with no extension bits


def client_frame_at(data: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """Where the client frame starting at ``pos`` lies: (its first byte, where its mask
    key starts, its payload length), or None if ``data`` ends before its header does.

    A mask key start of -1 means the frame is not masked (a protocol error: clients must
    mask). Only the header is read; the caller checks that the payload has arrived."""
    end = len(data)
    if end - pos < 2:
        return None
    first, second = data[pos], data[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        if end - start < 2:
            return None
        length = int.from_bytes(data[start : start + 2], "big")
        start += 2
    elif length == 127:
        if end - start < 8:
            return None
        length = int.from_bytes(data[start : start + 8], "big")
        start += 8
    return first, (start if second & 0x80 else -1), length
