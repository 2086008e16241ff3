"""Client frames as they really arrive over TCP: several in one segment, one cut across
many, fragments and control frames between text frames, frames sent before the handshake
was answered, and frames the protocol forbids.

The gateway reads unfragmented text frames on a fast path of its own and leaves every
other frame to websockets' parser (gateway/connection.py), so these tests pin what must
not change whichever of the two reads a frame: every frame is answered, in order, and a
forbidden one ends only its connection with the close code RFC 6455 asks for.

The client here is a raw socket; websockets' sans-I/O client builds the handshake and the
masked frames, so the bytes are those of a real client, cut where the test says.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import Account, Harness
from tests.e2e.test_bad_input import MAX_FRAME, server_alive


class RawClient:
    """One TCP connection speaking WebSocket through websockets' sans-I/O client: the
    test decides how the bytes are cut into writes."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str
    ) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1/{token}"))
        self.replies: list[dict[str, object]] = []

    @classmethod
    async def open(cls, hub: Harness, account: Account) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.server.ws_port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, account.token)

    def handshake_bytes(self) -> bytes:
        self.protocol.send_request(self.protocol.connect())
        return b"".join(self.protocol.data_to_send())

    async def finish_handshake(self) -> None:
        while self.protocol.state is State.CONNECTING:
            self.feed(await asyncio.wait_for(self.reader.read(65536), 10))
        assert self.protocol.state is State.OPEN

    async def handshake(self) -> None:
        self.writer.write(self.handshake_bytes())
        await self.finish_handshake()

    def frame(self, frame: Frame) -> bytes:
        """The bytes of one masked client frame (not sent)."""
        self.protocol.send_frame(frame)
        return b"".join(self.protocol.data_to_send())

    def text(self, payload: dict[str, object] | bytes) -> bytes:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return self.frame(Frame(Opcode.TEXT, data))

    def feed(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.replies.append(orjson.loads(event.data))

    async def send(self, data: bytes, *, cut_every: int = 0) -> None:
        """Write ``data`` at once, or in pieces of ``cut_every`` bytes with a pause after
        each, so the server reads them as separate segments."""
        if not cut_every:
            self.writer.write(data)
            await self.writer.drain()
            return
        for start in range(0, len(data), cut_every):
            self.writer.write(data[start : start + cut_every])
            await self.writer.drain()
            await asyncio.sleep(0.002)

    async def replies_for(self, refs: list[str]) -> list[dict[str, object]]:
        """The replies (in arrival order) until every ref has one."""
        while not set(refs) <= {r.get("ref") for r in self.replies}:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, f"closed before every reply came: {self.replies}"
            self.feed(data)
        return [r for r in self.replies if r.get("ref") in refs]

    async def close_code(self) -> int | None:
        """Read until the server closes; the code of its close frame."""
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                break
            self.feed(data)
        self.writer.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        client.close()


async def raw(hub: Harness, clients: list[RawClient], *, handshake: bool = True) -> RawClient:
    client = await RawClient.open(hub, hub.account())
    clients.append(client)
    if handshake:
        await client.handshake()
    return client


def pings(client: RawClient, refs: list[str]) -> bytes:
    return b"".join(client.text({"action": "ping", "ref": ref}) for ref in refs)


def oks(refs: list[str]) -> list[dict[str, object]]:
    return [{"action": "ping", "result": "ok", "ref": ref} for ref in refs]


async def answered(client: RawClient, refs: list[str]) -> None:
    """Pings with these refs, sent in one segment, are answered in order."""
    await client.send(pings(client, refs))
    assert await client.replies_for(refs) == oks(refs)


async def test_many_frames_in_one_segment_are_all_answered_in_order(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    client = await raw(hub, raw_clients)
    await answered(client, [f"p{i}" for i in range(200)])


@pytest.mark.parametrize("cut_every", [1, 3, 7])
async def test_frames_cut_anywhere_are_put_back_together(
    hub: Harness, raw_clients: list[RawClient], cut_every: int
) -> None:
    """Cuts inside the header, the mask key and the payload, of small and of 16-bit
    length frames, and frames that share a segment with the start of the next."""
    client = await raw(hub, raw_clients)
    refs = ["a", "b", "c"]
    small = pings(client, refs)
    padded = client.text({"action": "ping", "ref": "long", "pad": "x" * 300})  # 126: 2-byte len
    await client.send(small + padded, cut_every=cut_every)
    assert await client.replies_for([*refs, "long"]) == oks([*refs, "long"])


async def test_a_frame_at_the_limit_cut_in_two(hub: Harness, raw_clients: list[RawClient]) -> None:
    client = await raw(hub, raw_clients)
    head = b'{"action": "ping", "ref": "edge", "pad": "'
    payload = head + b"x" * (MAX_FRAME - len(head) - 2) + b'"}'
    frame = client.text(payload)
    await client.send(frame[: len(frame) // 2])
    await asyncio.sleep(0.05)
    await client.send(frame[len(frame) // 2 :])
    assert await client.replies_for(["edge"]) == oks(["edge"])


async def test_a_big_frame_in_many_segments_then_more_frames(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    """The kept start of a frame grows segment by segment; what follows it in the last
    segment is read too."""
    client = await raw(hub, raw_clients)
    big = client.text({"action": "ping", "ref": "big", "pad": "x" * 20000})
    await client.send(big + pings(client, ["next-1", "next-2"]), cut_every=1500)
    assert await client.replies_for(["big", "next-1", "next-2"]) == oks(["big", "next-1", "next-2"])


async def test_fragments_and_control_frames_between_text_frames(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    client = await raw(hub, raw_clients)
    whole = orjson.dumps({"action": "ping", "ref": "fragmented"})
    data = (
        client.text({"action": "ping", "ref": "before"})
        + client.frame(Frame(Opcode.TEXT, whole[:10], fin=False))
        + client.frame(Frame(Opcode.PING, b"are you there"))  # allowed between fragments
        + client.frame(Frame(Opcode.CONT, whole[10:20], fin=False))
        + client.frame(Frame(Opcode.CONT, whole[20:], fin=True))
        + client.text({"action": "ping", "ref": "after"})
    )
    await client.send(data, cut_every=5)
    refs = ["before", "fragmented", "after"]
    assert await client.replies_for(refs) == oks(refs)
    # The ping was answered by a pong carrying its payload.
    await client.send(client.frame(Frame(Opcode.PING, b"again")))
    await answered(client, ["last"])


async def test_frames_sent_with_the_handshake_request_are_answered(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    """A client that does not wait for the 101 (RFC 6455 says it should): the server
    reads what follows the request all the same."""
    client = await raw(hub, raw_clients, handshake=False)
    request = client.handshake_bytes()
    client.protocol.state = State.OPEN  # let the sans-I/O client build frames already
    early = pings(client, ["early-1", "early-2"])
    client.protocol.state = State.CONNECTING
    await client.send(request + early)
    await client.finish_handshake()
    await client.send(pings(client, ["later"]))
    refs = ["early-1", "early-2", "later"]
    assert await client.replies_for(refs) == oks(refs)


def unmasked_text(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x81, len(payload))) + payload


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [
        (unmasked_text(b'{"action": "ping"}'), 1002),  # clients must mask
        (bytes((0xC1, 0x80)) + os.urandom(4), 1002),  # RSV1 set, no extension agreed
        (bytes((0x83, 0x80)) + os.urandom(4), 1002),  # reserved opcode 3
        (bytes((0x81, 0xFF)) + struct.pack("!Q", 1 << 40) + os.urandom(4), 1009),
    ],
    ids=["unmasked", "rsv1", "reserved-opcode", "declared-huge"],
)
async def test_forbidden_frames_after_good_ones_close_only_that_connection(
    hub: Harness, raw_clients: list[RawClient], bad_frame: bytes, code: int
) -> None:
    """The good frames go the fast path; the bad one, in the same segment as a good one,
    ends the connection (a reply to a frame read just before it may be lost: the close
    comes first) and the frame after it is never read."""
    client = await raw(hub, raw_clients)
    await answered(client, ["ok-1", "ok-2"])
    await client.send(pings(client, ["same-segment"]) + bad_frame + pings(client, ["never"]))
    assert await client.close_code() == code
    assert all(r.get("ref") != "never" for r in client.replies)
    await server_alive(hub)


async def test_invalid_utf8_after_good_frames_closes_with_1007(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    client = await raw(hub, raw_clients)
    await answered(client, ["fine"])
    await client.send(client.text(b'{"action": "ping", "ref": "\xff"}') + pings(client, ["never"]))
    assert await client.close_code() == 1007
    assert all(r.get("ref") != "never" for r in client.replies)
    await server_alive(hub)


async def test_a_connection_that_ends_inside_a_frame(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    client = await raw(hub, raw_clients)
    frame = client.text({"action": "ping", "ref": "cut"})
    await client.send(pings(client, ["whole"]) + frame[:9])
    assert await client.replies_for(["whole"]) == oks(["whole"])
    client.writer.write_eof()
    assert await client.close_code() in (None, 1002, 1006)  # no reply to the cut frame
    assert all(r.get("ref") != "cut" for r in client.replies)
    await server_alive(hub)


async def test_a_close_frame_after_text_frames_is_echoed(
    hub: Harness, raw_clients: list[RawClient]
) -> None:
    client = await raw(hub, raw_clients)
    await answered(client, ["one", "two"])
    close = client.frame(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
    await client.send(close + pings(client, ["after-close"]))
    assert await client.close_code() == 1000
    assert all(r.get("ref") != "after-close" for r in client.replies)
