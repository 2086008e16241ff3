"""What the baselines share: the same event JSON as topichub's (PROTOCOL.md, "Server
events"), built once per published message, and a uvloop event loop when available."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

CONNECTED = orjson.dumps({"event": "connected", "username": "bench", "pending": 0})


def sent_at() -> str:
    now = datetime.now(tz=UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def message_event(topic: str, sender: str, content: Any, seq: int) -> dict[str, Any]:
    """The fields and order of topichub's message event."""
    return {
        "event": "message",
        "topic_name": topic,
        "from": sender,
        "content": content,
        "seq": seq,
        "sent_at": sent_at(),
        "direct": False,
        "pending": False,
    }


def ok(action: str, ref: Any, **fields: Any) -> bytes:
    reply = {"action": action, "result": "ok", **fields}
    if ref is not None:
        reply["ref"] = ref
    return orjson.dumps(reply)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` on uvloop if installed; SIGTERM/SIGINT set ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(runner())
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(runner())
