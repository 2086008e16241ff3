"""The WebSocket gateway: handshake and authentication, then one loop per connection.

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
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from topichub.config import Settings
from topichub.errors import CloseCode, InvalidRequest, Unauthorized
from topichub.gateway.connection import Connection
from topichub.gateway.cursors import CursorFlusher
from topichub.gateway.dispatch import Dispatcher
from topichub.gateway.hub import Hub
from topichub.models import User
from topichub.observability import Metrics
from topichub.services import Services
from topichub.store.base import Store
from topichub.wire.actions import BadFrame, Disconnect
from topichub.wire.codec import decode_action
from topichub.wire.events import (
    connected_event,
    message_event,
    messages_lost_event,
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
        self._server: Server | None = None
        self._principals: dict[object, tuple[User, bool]] = {}
        self.accepting = False

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(
            self._session,
            self.settings.host,
            self.settings.ws_port,
            process_request=self._authenticate,
            max_size=self.settings.max_frame_bytes,
            compression=None,
            close_timeout=5,
            ping_interval=20,
            ping_timeout=20,
            server_header="topichub",
        )
        self.cursors.start()
        self.accepting = True

    async def stop(self) -> None:
        """Graceful stop: no new connections, cursors saved, everyone told 1012."""
        if self._server is None:
            return
        self.accepting = False
        self._server.close(close_connections=False)
        conns = self.hub.connections()
        for conn in conns:
            conn.open = False
            self.hub.stop_routing(conn)
        await self.cursors.stop()
        await asyncio.gather(
            *(conn.close(CloseCode.SERVICE_RESTART, "server restarting") for conn in conns),
            return_exceptions=True,
        )
        await self._server.wait_closed()
        self._server = None

    async def _authenticate(self, ws: ServerConnection, request: Request) -> Response | None:
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
        self._principals[ws.id] = (user, manual_ack)
        return None

    async def _session(self, ws: ServerConnection) -> None:
        user, manual_ack = self._principals.pop(ws.id)
        conn = Connection(
            ws, user, manual_ack=manual_ack, buffer_limit=self.settings.outbound_buffer_bytes
        )
        conn.on_slow = self.metrics.slow_consumers.inc
        self.metrics.connections_total.inc()
        self.hub.add_user(conn)
        try:
            await self._open(conn)
            async for frame in ws:
                # Frames are UTF-8 JSON text (PROTOCOL.md, "Frames"): a binary one gets an
                # error reply and the connection stays open.
                action = decode_action(frame) if isinstance(frame, str) else BINARY_FRAME
                await self.dispatcher.handle(conn, action)
                if isinstance(action, Disconnect):
                    break
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection of %s failed", user.username)
            conn.open = False
            self.hub.stop_routing(conn)
            await self.cursors.flush_final(conn)
            await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        conn.open = False
        self.hub.stop_routing(conn)
        # Cursors are saved before the close completes (PROTOCOL.md, "Pending messages").
        await self.cursors.flush_final(conn)
        await conn.close(CloseCode.NORMAL)

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
            while after < pending.upto:
                records = await self.store.read_range(
                    pending.topic,
                    after=after,
                    upto=pending.upto,
                    exclude_sender_id=user.id,
                    limit=REPLAY_PAGE,
                )
                for record in records:
                    event = message_event(record, user.username, pending=True)
                    if not await conn.send_replay(pending.topic.id, record.seq, event):
                        # Closing mid-replay: the cursor covers only what was written.
                        self.metrics.replayed.inc(replayed)
                        return
                    replayed += 1
                if len(records) < REPLAY_PAGE:
                    break
                after = records[-1].seq
            replayed_upto[pending.topic.id] = pending.upto
        self.metrics.replayed.inc(replayed)
        conn.finish_replay(replayed_upto)
