"""``Connection.write_live`` writes a message straight to the socket only while asyncio's
transport holds nothing back: once the transport has buffered bytes, a direct write would
overtake them and interleave two frames on the wire. Here a real connection on a real
loopback socket, driven by asyncio's own transport, is made to buffer, then its peer frees
room in the socket *before the event loop runs the transport's flush*: the one moment a
direct write would succeed out of order. And the write coalescer writes what is queued
even when the hub's hand-out that runs before it fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.unit.loopback import open_connection, read_frames
from topichub.gateway.connection import WriteCoalescer
from topichub.gateway.frames import text_frame
from topichub.store.base import CursorUpdate


async def test_a_direct_write_never_overtakes_what_the_transport_holds() -> None:
    conn, peer = await open_connection()
    assert conn.transport is not None
    payloads = [b"%06d" % seq + b"x" * 3000 for seq in range(1, 200)]
    seq = 0
    while not conn.transport.get_write_buffer_size():  # until the kernel takes no more
        seq += 1
        assert conn.write_live(7, seq, text_frame(payloads[seq - 1]))
    # Room in the socket again, and the transport has not flushed yet (the loop has not
    # run): a direct write would go out now, ahead of the buffered frame.
    peer.setblocking(False)
    received = peer.recv(1 << 20)
    for _ in range(5):
        seq += 1
        assert conn.write_live(7, seq, text_frame(payloads[seq - 1]))
    expected = sum(len(text_frame(payload)) for payload in payloads[:seq])
    deadline = asyncio.get_running_loop().time() + 10
    while len(received) < expected:  # read while the loop lets the transport flush
        assert asyncio.get_running_loop().time() < deadline, (len(received), expected)
        try:
            received += peer.recv(1 << 20)
        except BlockingIOError:
            await asyncio.sleep(0.001)
    assert read_frames(received) == payloads[:seq]
    assert conn.sent_seq[7] == seq
    conn.transport.abort()
    peer.close()


async def test_the_socket_write_moves_the_cursor_and_drops_duplicates() -> None:
    conn, peer = await open_connection()
    assert conn.transport is not None
    assert conn.write_live(3, 5, text_frame(b"five"))
    assert not conn.write_live(3, 5, text_frame(b"five again"))  # already written
    assert not conn.write_live(3, 4, text_frame(b"older"))
    assert conn.take_cursor_updates() == [CursorUpdate(42, 3, 5)]
    peer.settimeout(2)
    assert read_frames(peer.recv(100)) == [b"five"]
    conn.transport.abort()
    peer.close()


async def test_queued_frames_go_out_even_if_the_hand_out_before_them_fails() -> None:
    def hand_out() -> None:
        raise RuntimeError("a bug in the hub's hand-out")

    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    conn, peer = await open_connection(WriteCoalescer(before_flush=hand_out))
    assert conn.send(b'{"action":"ping","result":"ok"}')  # a reply, queued for the flush
    await asyncio.sleep(0)  # the coalescer's flush
    peer.settimeout(2)
    assert read_frames(peer.recv(100)) == [b'{"action":"ping","result":"ok"}']
    assert [str(context.get("exception")) for context in errors] == ["a bug in the hub's hand-out"]
    assert conn.transport is not None
    conn.transport.abort()
    peer.close()
