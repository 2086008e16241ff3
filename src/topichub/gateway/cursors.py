"""Saving delivery cursors in batches (DESIGN.md, "a log and cursors").

Connections note what they delivered (or what was acked) in memory; this flusher writes all
of it in one statement every ``cursor_flush_ms``, and at once when a connection ends, so a
clean reconnect never replays what the closed connection already received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from topichub.gateway.connection import Connection
from topichub.gateway.hub import Hub
from topichub.observability import Metrics
from topichub.store.base import CursorUpdate, Store

log = logging.getLogger(__name__)

# Connections whose cursors one flush takes before it lets the loop run again: taking them
# from thousands of connections at once held every fan-out back by milliseconds.
TAKE_CHUNK = 250


class CursorFlusher:
    def __init__(self, store: Store, hub: Hub, metrics: Metrics, interval_ms: int) -> None:
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.interval = interval_ms / 1000
        self._task: asyncio.Task[None] | None = None
        # Connections that noted cursor moves since the last flush: the periodic flush
        # visits only these, not every idle connection.
        self.dirty: set[Connection] = set()
        # One flush at a time: a flush that finds nothing left to take (the periodic one
        # took it) must still wait until that write is committed, or a new connection
        # could read its pending range from a stale cursor and replay what was delivered.
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cursor-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(self.hub.connections())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            conns = list(self.dirty)
            self.dirty.clear()  # in place: the connections hold this very set
            try:
                await self.flush(conns)
            except Exception:
                log.exception("cursor flush failed; will retry")

    async def flush(self, conns: list[Connection]) -> None:
        async with self._lock:
            batches: list[tuple[Connection, list[CursorUpdate]]] = []
            for start in range(0, len(conns), TAKE_CHUNK):
                if start:
                    await asyncio.sleep(0)  # let the messages that arrived meanwhile go out
                batches += [(c, c.take_cursor_updates()) for c in conns[start : start + TAKE_CHUNK]]
            updates: list[CursorUpdate] = [u for _, batch in batches for u in batch]
            if not updates:
                return
            try:
                await self.store.advance_cursors(updates)
            except Exception:
                self.metrics.store_errors.inc()
                for conn, batch in batches:
                    conn.restore_cursor_updates(batch)
                raise

    async def flush_user(self, username: str, *, exclude: Connection) -> None:
        """Save every cursor of the user's other connections on this node, including
        those still finishing their close, before a new connection reads its pending."""
        others = [c for c in self.hub.by_user.get(username, ()) if c is not exclude]
        await self.flush(others)
        finishing = [c.final_flush for c in others if c.final_flush is not None]
        if finishing:
            await asyncio.gather(*finishing, return_exceptions=True)

    async def flush_final(self, conn: Connection) -> None:
        """The last flush of an ended connection; then the hub forgets it."""
        future = asyncio.get_running_loop().create_future()
        conn.final_flush = future
        try:
            await self.flush([conn])
        except Exception:
            log.exception("could not save the cursors of a closed connection")
        finally:
            future.set_result(None)
            self.hub.forget(conn)
