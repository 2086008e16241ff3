"""Server-to-client WebSocket frames, built once and written to many sockets (RFC 6455
section 5.2). A server's frames are never masked, so the bytes of one event are the same
for every recipient. Pure functions, no I/O."""

from __future__ import annotations

PING_FRAME = b"\x89\x00"  # FIN + ping, no payload


def text_frame(payload: bytes) -> bytes:
    """One unfragmented text frame (FIN + opcode 0x1) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload
