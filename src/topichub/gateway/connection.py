"""One client connection: its outbound path, per-topic positions and cursors.

Writes never wait: a frame goes straight into the socket's send buffer, and a client whose
buffer grows past the limit is closed with 1013 (it gets the rest as pending when it comes
back), so one slow client never slows the others (DESIGN.md, "Slow consumers").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from topichub.errors import CloseCode
from topichub.models import User
from topichub.store.base import CursorUpdate

log = logging.getLogger(__name__)


class Connection:
    def __init__(
        self, ws: ServerConnection, user: User, *, manual_ack: bool, buffer_limit: int
    ) -> None:
        self.ws = ws
        self.user = user
        self.username = user.username
        self.manual_ack = manual_ack
        self.buffer_limit = buffer_limit
        self.topic_ids: set[int] = set()
        # Highest seq written per topic: anything at or below it is a duplicate.
        self.sent_seq: dict[int, int] = {}
        # Cursor positions not yet saved (what was written, or acked with ack=manual).
        self._cursor_updates: dict[int, int] = {}
        # While the pending replay runs, live events wait here (DESIGN.md, "Reconnect").
        self._held: list[tuple[int, int, bytes]] | None = []
        self.open = True
        self.final_flush: asyncio.Future[None] | None = None
        self.on_slow: Any = None

    # -- writing --------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Write one text frame now, or close the connection as a slow consumer.

        Returns False when nothing was written: the connection is closing (its close frame
        is sent or received, or it was found too slow) or it just went over its buffer.
        """
        if not self.open or self.ws.protocol.state is not State.OPEN:
            return False
        transport = self.ws.transport
        if transport.get_write_buffer_size() > self.buffer_limit:
            self.close_slow()
            return False
        self.ws.protocol.send_text(data)
        self.ws.send_data()
        return True

    async def send_replay(self, topic_id: int, seq: int, data: bytes) -> bool:
        """Write a pending message, waiting for the socket rather than overflowing it.

        Returns False (and writes nothing) once the connection is closing."""
        if not self.open or self.ws.protocol.state is not State.OPEN:
            return False
        self.ws.protocol.send_text(data)
        self.ws.send_data()
        self._written(topic_id, seq)
        if self.ws.transport.get_write_buffer_size() > self.buffer_limit // 2:
            with contextlib.suppress(OSError):  # lost meanwhile: the next write sees it
                await self.ws.drain()
        return True

    def _written(self, topic_id: int, seq: int) -> None:
        self.sent_seq[topic_id] = seq
        if not self.manual_ack:
            self._cursor_updates[topic_id] = seq

    def deliver(self, topic_id: int, seq: int, data: bytes) -> bool:
        """A live message event; returns True if it was written.

        Only a frame actually written moves the cursor: a message that reaches a closing
        connection (or the one that finds it too slow) stays pending for the next one.
        """
        if self._held is not None:
            self._held.append((topic_id, seq, data))
            return False
        if seq <= self.sent_seq.get(topic_id, 0):
            return False
        if not self.send(data):
            return False
        self._written(topic_id, seq)
        return True

    def finish_replay(self, replayed_upto: dict[int, int]) -> int:
        """End the replay: release held live events, dropping what the replay covered."""
        for topic_id, upto in replayed_upto.items():
            self.sent_seq[topic_id] = max(self.sent_seq.get(topic_id, 0), upto)
            if not self.manual_ack:
                self._cursor_updates[topic_id] = self.sent_seq[topic_id]
        held, self._held = self._held or [], None
        return sum(self.deliver(topic_id, seq, data) for topic_id, seq, data in held)

    def close_slow(self) -> None:
        if not self.open:
            return
        self.open = False
        log.info(
            "closing slow consumer %s (send buffer over %d bytes)", self.username, self.buffer_limit
        )
        if self.on_slow is not None:
            self.on_slow()
        asyncio.get_running_loop().create_task(
            self.close(CloseCode.TRY_AGAIN_LATER, "too slow to keep up: reconnect")
        )

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``, within the close timeout even if the client stopped reading.

        ``websockets`` first waits, without a limit, for the send buffer to drain, and only
        then starts its close timeout: a client that stopped reading would hold the close
        (and a graceful shutdown) until the keepalive gives up, 20-40 s later.
        """
        limit = self.ws.close_timeout or 10.0
        try:
            await asyncio.wait_for(self.ws.close(code, reason), limit)
        except TimeoutError:
            self.ws.transport.abort()

    # -- cursors --------------------------------------------------------------------------

    def acknowledge(self, topic_id: int, seq: int) -> None:
        if seq > self._cursor_updates.get(topic_id, 0):
            self._cursor_updates[topic_id] = seq

    def take_cursor_updates(self) -> list[CursorUpdate]:
        if not self._cursor_updates:
            return []
        updates = [
            CursorUpdate(self.user.id, topic_id, seq)
            for topic_id, seq in self._cursor_updates.items()
        ]
        self._cursor_updates = {}
        return updates

    def restore_cursor_updates(self, updates: list[CursorUpdate]) -> None:
        """Put back updates whose write failed, so the next flush retries them."""
        for update in updates:
            self.acknowledge(update.topic_id, update.seq)
