"""The WebSocket gateway: handshake and authentication, pending replay, one action at a time.

Connecting (PROTOCOL.md, "Connecting"): ``/<token>``, ``/ws?token=<token>`` or ``/ws`` with
``Authorization: Bearer <token>``; ``ack=manual`` opts into manual acknowledgement. A bad
token is refused at the handshake with 401 and a JSON body.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from topichub.config import Settings
from topichub.errors import CloseCode, InvalidRequest, Unauthorized
from topichub.gateway.connection import Connection
from topichub.gateway.cursors import CursorFlusher
from topichub.gateway.dispatch import Dispatcher
from topichub.gateway.frames import text_frame_header
from topichub.gateway.hub import Hub
from topichub.observability import Metrics
from topichub.services import Services
from topichub.store.base import Store
from topichub.wire.actions import Action, BadFrame, Disconnect, Publish
from topichub.wire.codec import decode_action
from topichub.wire.events import (
    connected_event,
    messages_lost_event,
    pending_page,
    view_topic_name,
)

log = logging.getLogger(__name__)

REPLAY_PAGE = 1000
BINARY_FRAME = BadFrame(InvalidRequest("binary frames are not accepted: send JSON as text"))


def token_from_request(request: Request) -> tuple[str | None, bool]:
    """(token, manual_ack) from the three accepted forms of PROTOCOL.md, "Connecting"."""
    url = urlsplit(request.path)
    query = parse_qs(url.query)
    manual_ack = query.get("ack", [""])[-1] == "manual"
    path = unquote(url.path).strip("/")
    if path and path != "ws":
        return path, manual_ack
    if "token" in query:
        return query["token"][-1], manual_ack
    auth = request.headers.get("Authorization", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), manual_ack
    return None, manual_ack


class Gateway:
    """Accepts WebSocket connections and runs each one's session (the ``Session`` the
    connections call back into)."""

    def __init__(
        self, settings: Settings, services: Services, store: Store, hub: Hub, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.services = services
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.dispatcher = Dispatcher(services, metrics)
        self.cursors = CursorFlusher(store, hub, metrics, settings.cursor_flush_ms)
        self.coalescer = hub.coalescer  # the hub's fan-out runs first in its flush
        self._server: asyncio.Server | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = False

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection, self.settings.host, self.settings.ws_port, backlog=4096
        )
        self.cursors.start()
        self._keepalive = asyncio.create_task(self._keep_alive(), name="ws-keepalive")
        self.accepting = True

    def _new_connection(self) -> Connection:
        return Connection(
            self,
            self.coalescer,
            self.cursors.dirty,
            max_frame_bytes=self.settings.max_frame_bytes,
            buffer_limit=self.settings.outbound_buffer_bytes,
        )

    async def stop(self) -> None:
        """Graceful stop: no new connections, cursors saved, everyone told 1012."""
        if self._server is None:
            return
        self.accepting = False
        self._server.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        conns = self.hub.connections()
        for conn in conns:
            conn.flush_out()
            conn.open = False
            self.hub.stop_routing(conn)
        await self.cursors.stop()
        await asyncio.gather(
            *(conn.close(CloseCode.SERVICE_RESTART, "server restarting") for conn in conns),
            return_exceptions=True,
        )
        self._server = None

    async def _keep_alive(self) -> None:
        """Ping connections that were quiet for half an interval; cut a connection only when
        a ping of ours went a whole interval without anything coming back (a dead peer).
        A client that only receives answers every ping, so it is never cut."""
        loop = asyncio.get_running_loop()
        interval = self.settings.keepalive_seconds
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in self.hub.connections():
                if conn.ping_sent_at is not None and conn.last_seen < conn.ping_sent_at:
                    conn.abort()
                    continue
                conn.ping_sent_at = None
                if now - conn.last_seen >= interval / 2:
                    conn.ping()
                    conn.ping_sent_at = now

    # -- Session --------------------------------------------------------------------------

    async def authenticate(self, conn: Connection, request: Request) -> Response | None:
        token, manual_ack = token_from_request(request)
        try:
            if token is None:
                raise Unauthorized(
                    "no token: connect to /<token>, /ws?token=... or send "
                    "Authorization: Bearer <token>"
                )
            user = await self.services.users.principal(token)
        except Unauthorized as error:
            self.metrics.handshake_refused.inc()
            self.metrics.error(error.code, error.message, "ws handshake", count=False)
            body = orjson.dumps({"error": error.code, "message": error.message})
            return Response(
                HTTPStatus.UNAUTHORIZED.value,
                HTTPStatus.UNAUTHORIZED.phrase,
                Headers(
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ]
                ),
                body,
            )
        conn.user, conn.username, conn.manual_ack = user, user.username, manual_ack
        return None

    async def open_session(self, conn: Connection) -> None:
        conn.on_slow = self.metrics.slow_consumers.inc
        self.metrics.connections_total.inc()
        self.hub.add_user(conn)
        await self._open(conn)

    def handle_now(self, conn: Connection, message: str | None) -> Action | BadFrame | None:
        # Frames are UTF-8 JSON text (PROTOCOL.md, "Frames"): a binary one gets an error
        # reply and the connection stays open.
        action = decode_action(message) if message is not None else BINARY_FRAME
        if isinstance(action, Publish) and self.dispatcher.publish_now(conn, action):
            return None
        return action

    async def handle_action(self, conn: Connection, action: Action | BadFrame) -> None:
        await self.dispatcher.handle(conn, action)
        if isinstance(action, Disconnect):
            await self._finish(conn, CloseCode.NORMAL)

    def connection_ended(self, conn: Connection) -> None:
        if conn.final_flush is None:
            conn.open = False
            self.hub.stop_routing(conn)
            task = asyncio.get_running_loop().create_task(self.cursors.flush_final(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, conn: Connection, code: int, reason: str = "") -> None:
        """End a session on our side: cursors are saved before the close completes
        (PROTOCOL.md, "Pending messages")."""
        conn.flush_out()
        conn.open = False
        self.hub.stop_routing(conn)
        await self.cursors.flush_final(conn)
        await conn.close(code, reason)

    async def _open(self, conn: Connection) -> None:
        """Register for live events (held), replay what is pending, then go live.

        Registering before reading the store means a message committed after the read is
        held, and one committed before it is replayed; the held copy of anything replayed is
        dropped by seq, so there is no gap and no duplicate (DESIGN.md, "Reconnect").
        """
        user = conn.user
        self.hub.add_topics(conn, await self.store.user_topics(user.id))
        await self.cursors.flush_user(user.username, exclude=conn)
        ranges = await self.store.pending_ranges(user.id)
        conn.send(connected_event(user.username, sum(r.count for r in ranges)))
        replayed_upto: dict[int, int] = {}
        replayed = 0
        for pending in ranges:
            after = pending.after
            if pending.lost:
                conn.send(
                    messages_lost_event(
                        view_topic_name(pending.topic, user.username),
                        pending.after,
                        pending.trimmed,
                        pending.lost,
                    )
                )
                after = pending.trimmed
            name = view_topic_name(pending.topic, user.username)
            direct = pending.topic.direct_pair is not None
            while after < pending.upto:
                rows = await self.store.read_page(
                    pending.topic,
                    after=after,
                    upto=pending.upto,
                    exclude_sender_id=user.id,
                    limit=REPLAY_PAGE,
                )
                if rows:
                    last_seq = rows[-1][0]
                    frames = pending_page(rows, name, direct, text_frame_header)
                    if not await conn.send_replay(pending.topic.id, last_seq, frames):
                        # Closing mid-replay: the cursor covers only what was written.
                        self.metrics.replayed.inc(replayed)
                        return
                    replayed += len(rows)
                if len(rows) < REPLAY_PAGE:
                    break
                after = last_seq
            replayed_upto[pending.topic.id] = pending.upto
        self.metrics.replayed.inc(replayed)
        conn.finish_replay(replayed_upto)
