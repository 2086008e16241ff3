"""What one test WebSocket connection received, and the raw-client helpers the delivery
and shutdown tests share (they need every frame, close codes and aborts, which
``topichub.testing.WsClient`` hides)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from topichub.testing import timeout


@dataclass
class Session:
    """Everything one WebSocket connection of a member received."""

    how: str = ""
    hello: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    acks_sent: list[int] = field(default_factory=list)
    acks_confirmed: list[int] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    def take(self, frame: str | bytes) -> dict[str, Any]:
        data = orjson.loads(frame)
        assert isinstance(data, dict), data
        if data.get("event") == "message":
            self.events.append(data)
        elif "result" in data:
            self.replies.append(data)
            if data.get("action") == "ack" and data["result"] == "ok":
                self.acks_confirmed.append(data["seq"])
        return data

    def check_pending_prefix(self) -> None:
        """``pending`` in ``connected`` is the number of pending:true events that open the
        stream; everything after them is live."""
        count = self.hello["pending"]
        flags = [e["pending"] for e in self.events]
        assert all(flags[:count]), (self.hello, flags[:count])
        assert not any(flags[count:]), (self.hello, flags)


async def open_ws(url: str, **kwargs: Any) -> tuple[ClientConnection, Session]:
    ws = await connect(url, open_timeout=timeout(30), max_size=2**24, **kwargs)
    session = Session()
    session.hello = orjson.loads(await asyncio.wait_for(ws.recv(), timeout(30)))
    assert session.hello["event"] == "connected", session.hello
    return ws, session


async def read_until_closed(ws: ClientConnection, session: Session) -> None:
    """Read everything the server still sends, up to and including its close."""
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), timeout(60))
        except ConnectionClosed:
            break
        session.take(frame)
    session.close_code = ws.close_code


async def read_events(ws: ClientConnection, session: Session, count: int) -> None:
    """Read until ``count`` message events in all have arrived on this connection."""
    while len(session.events) < count:
        session.take(await asyncio.wait_for(ws.recv(), timeout(60)))


async def request(ws: ClientConnection, session: Session, action: str, **fields: Any) -> Any:
    ref = f"{action}-{os.urandom(4).hex()}"
    await ws.send(orjson.dumps({"action": action, "ref": ref, **fields}).decode())
    while True:
        data = session.take(await asyncio.wait_for(ws.recv(), timeout(60)))
        if data.get("ref") == ref:
            return data


async def disconnect(ws: ClientConnection, session: Session) -> None:
    await ws.send('{"action": "disconnect"}')
    await read_until_closed(ws, session)
    assert session.close_code == 1000, session.close_code
