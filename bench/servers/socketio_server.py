"""Baseline: python-socketio rooms on aiohttp, as an application would write it: each
subscriber joins a room, each publish is one ``emit(..., room=...)``.

Its wire protocol is Engine.IO/Socket.IO, not topichub's; the load generator speaks it
through a small dialect (:class:`bench.loadgen.SocketIODialect`) on the same client code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from aiohttp import web

from bench.servers.protocol import message_event, run

ROOM = "fan"
sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=2**20)
SEQ = [0]


@sio.on("subscribe")  # type: ignore[untyped-decorator]
async def subscribe(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    await sio.enter_room(sid, ROOM)
    return {"action": "subscribe", "result": "ok", "topic_name": data.get("topic_name")}


@sio.on("publish")  # type: ignore[untyped-decorator]
async def publish(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    SEQ[0] += 1
    seq = SEQ[0]
    event = message_event(data["topic_name"], "pub", data["content"], seq)
    await sio.emit("message", event, room=ROOM)
    return {"action": "message", "result": "ok", "seq": seq}


async def main(stop: asyncio.Event) -> None:
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"socketio baseline ready: ws://127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    run(main)
