"""Baseline: a minimal ``websockets`` server fanning out with ``websockets.broadcast()``
(one encode per message, one frame written to each connection)."""

from __future__ import annotations

import asyncio

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from bench.servers.protocol import CONNECTED, message_event, ok, run

SUBSCRIBERS: set[ServerConnection] = set()
SEQ = [0]


async def session(ws: ServerConnection) -> None:
    await ws.send(CONNECTED.decode())
    try:
        async for frame in ws:
            request = orjson.loads(frame)
            action, ref = request.get("action"), request.get("ref")
            if action in ("subscribe", "suscribe"):
                SUBSCRIBERS.add(ws)
                await ws.send(ok(action, ref, topic_name=request["topic_name"]).decode())
            elif action == "message":
                SEQ[0] += 1
                topic = request["topic_name"]
                await ws.send(ok(action, ref, topic_name=topic, seq=SEQ[0]).decode())
                event = message_event(topic, "pub", request["content"], SEQ[0])
                broadcast(SUBSCRIBERS, orjson.dumps(event).decode())
            else:
                await ws.send(ok(action, ref).decode())
    except ConnectionClosed:
        pass
    finally:
        SUBSCRIBERS.discard(ws)


async def main(stop: asyncio.Event) -> None:
    async with serve(
        session, "127.0.0.1", 0, compression=None, max_size=2**20, backlog=4096
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"websockets baseline ready: ws://127.0.0.1:{port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    run(main)
