"""Baseline: a minimal picows server. Each published message is encoded once into one
pre-built WebSocket frame, written as is to every subscriber's transport (the raw ceiling
of "one frame per socket per message")."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from bench.servers.protocol import CONNECTED, message_event, ok, run


def text_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client text frame, FIN set."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Room:
    def __init__(self) -> None:
        self.subscribers: dict[int, asyncio.Transport] = {}
        self.seq = 0


ROOM = Room()


class BaselineListener(WSListener):  # type: ignore[misc]
    """What every picows baseline does with a connection: greet it as topichub does,
    answer a close, and decode a text frame into its request."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, CONNECTED)

    @staticmethod
    def request(transport: WSTransport, frame: WSFrame) -> dict[str, Any] | None:
        """The frame's request, or None for a frame that carries none (closes answered)."""
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return None
        if frame.msg_type != WSMsgType.TEXT:
            return None
        request: dict[str, Any] = orjson.loads(frame.get_payload_as_bytes())
        return request


class Client(BaselineListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        request = self.request(transport, frame)
        if request is None:
            return
        action, ref = request.get("action"), request.get("ref")
        if action in ("subscribe", "suscribe"):
            ROOM.subscribers[id(transport)] = transport.underlying_transport
            transport.send(WSMsgType.TEXT, ok(action, ref, topic_name=request["topic_name"]))
        elif action == "message":
            ROOM.seq += 1
            topic = request["topic_name"]
            transport.send(WSMsgType.TEXT, ok(action, ref, topic_name=topic, seq=ROOM.seq))
            event = message_event(topic, "pub", request["content"], ROOM.seq)
            data = text_frame(orjson.dumps(event))
            for sink in ROOM.subscribers.values():
                sink.write(data)
        else:
            transport.send(WSMsgType.TEXT, ok(action, ref))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        ROOM.subscribers.pop(id(transport), None)


async def main(stop: asyncio.Event) -> None:
    def factory(request: WSUpgradeRequest) -> Client:
        return Client()

    server = await ws_create_server(factory, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"picows baseline ready: ws://127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    run(main)
