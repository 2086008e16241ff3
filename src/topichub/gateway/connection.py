"""One client connection: the WebSocket protocol driven by hand, its outbound path, its
per-topic positions and cursors.

The connection is an :class:`asyncio.Protocol` around websockets' sans-I/O
``ServerProtocol``: bytes in through ``receive_data``, handshake and frames out through
``events_received``, protocol replies (pong, close) out through ``data_to_send``. No task
runs per idle connection, which keeps memory per connection small.

Outbound frames are built once per event (:mod:`topichub.gateway.frames`) and *coalesced*:
a connection collects the frames of one event-loop iteration and writes them with one
``transport.write``, so a busy socket gets many messages per system call. Writes never wait:
a client whose unsent data grows past the limit is closed with 1013 (it gets the rest as
pending when it comes back), so one slow client never slows the others (DESIGN.md,
"Slow consumers").
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

try:
    from websockets.speedups import apply_mask  # websockets' own C unmasking
except ImportError:  # a websockets built without its C extension
    from websockets.utils import apply_mask

from topichub.errors import CloseCode
from topichub.gateway.frames import FAST_TEXT, PING_FRAME, client_frame_at, text_frame
from topichub.models import User
from topichub.store.base import AppendResult, Committed, CursorUpdate
from topichub.wire.actions import Action, BadFrame

log = logging.getLogger(__name__)

OPEN = State.OPEN  # read per frame and per write: an enum class attribute costs ~0.13 µs

INBOX_HIGH = 64  # frames waiting for their turn before the socket stops being read
INBOX_LOW = 8
BEFORE_OPEN_LIMIT = 65536  # a handshake request is far smaller
PUBLISH_PIPELINE = 64  # publishes of one connection checked and queued, not yet committed
# Unsent bytes at which the transport calls pause_writing (asyncio's default high water):
# a replay then waits for the socket, and only then is the slow-consumer limit checked.
WRITE_HIGH_WATER = 65536


class Session(Protocol):
    """What a connection asks of the gateway (gateway/server.py implements it)."""

    async def authenticate(self, conn: Connection, request: Request) -> Response | None: ...
    async def open_session(self, conn: Connection) -> None: ...
    def handle_now(self, conn: Connection, message: str | None) -> Action | BadFrame | None:
        """Handle ``message`` at once if that needs no waiting (None), else decode it for
        ``handle_action``: a publish the node can check from memory costs no coroutine."""

    async def handle_action(self, conn: Connection, action: Action | BadFrame) -> None: ...
    def connection_ended(self, conn: Connection) -> None: ...


class WriteCoalescer:
    """Flushes every connection that has frames waiting, once per loop iteration.

    ``before_flush`` runs first: the hub's fan-out of the iteration's messages (see
    ``Hub.deliver_outbox``), so their frames join the replies queued meanwhile."""

    def __init__(self, before_flush: Callable[[], None] | None = None) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False
        self.before_flush = before_flush

    def schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self.schedule()

    def flush(self) -> None:
        self._scheduled = False
        try:
            if self.before_flush is not None:
                self.before_flush()
        finally:  # what is queued goes out even if the hand-out before it failed
            dirty, self._dirty = self._dirty, []
            for conn in dirty:
                conn.flush_out()


class Connection(asyncio.Protocol):
    # Slots, not a __dict__: the fan-out touches a few attributes of every connection per
    # message, and at a low rate each pass finds them out of the CPU's caches.
    __slots__ = (
        "_before_open",
        "_cursor_dirty",
        "_cursor_updates",
        "_drained",
        "_fd",
        "_fragment_opcode",
        "_fragments",
        "_held",
        "_inbox",
        "_out",
        "_out_seqs",
        "_out_size",
        "_partial",
        "_publishes_settled",
        "_publishing",
        "_reading_paused",
        "_tasks",
        "_timer",
        "_worker",
        "_writing_paused",
        "buffer_limit",
        "close_timeout",
        "closed",
        "coalescer",
        "final_flush",
        "handshake_timeout",
        "last_seen",
        "manual_ack",
        "max_frame_bytes",
        "on_slow",
        "open",
        "ping_sent_at",
        "protocol",
        "ready",
        "sent_seq",
        "session",
        "topic_ids",
        "transport",
        "user",
        "username",
    )

    user: User
    username: str

    def __init__(
        self,
        session: Session,
        coalescer: WriteCoalescer,
        cursor_dirty: set[Connection],
        *,
        max_frame_bytes: int,
        buffer_limit: int,
        close_timeout: float = 5.0,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.session = session
        self.username = ""
        self.coalescer = coalescer
        self.protocol = ServerProtocol(max_size=max_frame_bytes, logger=log)
        self.buffer_limit = buffer_limit
        self.close_timeout = close_timeout
        self.handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self._fd = -1  # the socket's descriptor, for _write's writes straight to it
        self.manual_ack = False
        self.open = False  # True from the accepted handshake until closing starts
        self.ready = False  # True once the pending replay is done
        self.topic_ids: set[int] = set()
        # Highest seq written per topic: anything at or below it is a duplicate.
        self.sent_seq: dict[int, int] = {}
        # Cursor positions not yet saved (what was written, or acked with ack=manual).
        self._cursor_updates: dict[int, int] = {}
        # The connections with unsaved cursor positions (shared with the CursorFlusher).
        self._cursor_dirty = cursor_dirty
        # While the pending replay runs, live events wait here (DESIGN.md, "Reconnect").
        self._held: list[tuple[int, int, bytes]] | None = []
        self.final_flush: asyncio.Future[None] | None = None
        self.on_slow: Callable[[], None] | None = None
        self._out: list[bytes] = []
        self._out_size = 0  # bytes the pending replay queued since its last flush
        # Cursor moves of the queued frames: they count only once the frames are written.
        self._out_seqs: dict[int, int] = {}
        self._inbox: deque[str | None] = deque()
        self.max_frame_bytes = max_frame_bytes
        # What arrived before the handshake was answered (see _handshake), then None.
        self._before_open: bytearray | None = bytearray()
        # The fast path's unparsed bytes (a frame cut short); None: websockets reads all.
        self._partial: bytearray | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode = Opcode.TEXT
        self._worker: asyncio.Task[None] | None = None
        # Publishes queued for commit; each replies when its commit is done.
        self._publishing = 0
        self._publishes_settled: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.last_seen = loop.time()  # when the client last sent anything (a pong too)
        self.ping_sent_at: float | None = None  # our keepalive ping awaiting any answer

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        # The transport tells us (pause_writing) once its unsent backlog passes this, so
        # the slow-consumer check in _start_batch need not ask it on every batch.
        self.transport.set_write_buffer_limits(high=min(WRITE_HIGH_WATER, self.buffer_limit))
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()  # a plain TCP socket: its bytes are the frames as is
        self._timer = asyncio.get_running_loop().call_later(
            self.handshake_timeout, self._handshake_timed_out
        )

    def data_received(self, data: bytes) -> None:
        self.last_seen = asyncio.get_running_loop().time()
        if self._partial is not None:
            self._read_frames(data)
        else:
            if self._before_open is not None:
                self._before_open += data
                if len(self._before_open) > BEFORE_OPEN_LIMIT:
                    self._before_open = None  # not a plain handshake: no fast path
            self._receive(data)

    def _receive(self, data: bytes | bytearray) -> None:
        """Bytes through websockets' parser: the handshake, and every frame the fast path
        leaves to it."""
        self.protocol.receive_data(bytes(data))
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self._spawn(self._handshake(event))
            elif isinstance(event, Frame):
                self._frame_received(event)
        self._send_protocol_data()

    def _read_frames(self, data: bytes) -> None:
        """The fast path for what clients send most: an unfragmented, masked text frame is
        unmasked and queued here (websockets' parser, in Python, costs several µs per
        frame). Every other frame (control, binary, fragments) goes whole to websockets,
        so its parser always stands at a frame boundary; anything it must refuse
        (unmasked, oversized) goes to it with the rest of the stream, and the fast path
        ends there: websockets fails the connection with the right close code."""
        buffer: bytes | bytearray = data
        if self._partial:  # grown in place: a big frame in many segments is copied once
            self._partial += data
            buffer = self._partial
        pos, end = 0, len(buffer)
        while pos < end and self.protocol.state is OPEN:
            header = client_frame_at(buffer, pos)
            if header is None:
                self._keep(buffer, pos)  # a header cut short
                return
            first, mask_at, length = header
            if mask_at < 0 or length > self.max_frame_bytes:
                break  # websockets refuses it
            frame_end = mask_at + 4 + length
            if frame_end > end:
                self._keep(buffer, pos)  # a payload cut short
                return
            if first == FAST_TEXT and not self._fragments:
                mask = buffer[mask_at : mask_at + 4]
                self._text_received(apply_mask(buffer[mask_at + 4 : frame_end], mask))
            else:
                self._receive(buffer[pos:frame_end])
            pos = frame_end
        if pos == end and self.protocol.state is OPEN:
            self._partial = bytearray()
            return
        self._partial = None  # from here on websockets reads this connection
        if pos < end:
            self._receive(buffer[pos:])

    def _keep(self, buffer: bytes | bytearray, pos: int) -> None:
        """Keep the start of a frame for the next read."""
        if pos or buffer is not self._partial:
            self._partial = bytearray(memoryview(buffer)[pos:])

    def eof_received(self) -> bool | None:
        if self._partial:  # a frame cut short: websockets says so
            self.protocol.receive_data(bytes(self._partial))
        self._partial = None
        self.protocol.receive_eof()
        self._send_protocol_data()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fd = -1  # closed: the number may soon be another socket's
        self._out.clear()
        self._out_seqs.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)
        if self.ready or self.username:
            self.session.connection_ended(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- handshake ------------------------------------------------------------------------

    async def _handshake(self, request: Request) -> None:
        try:
            response = await self.session.authenticate(self, request)
        except Exception:
            log.exception("handshake failed")
            response = self.protocol.reject(500, "internal error\n")
        if response is None:
            response = self.protocol.accept(request)
            response.headers["Server"] = "topichub"
        self.protocol.send_response(response)
        self._send_protocol_data()
        before_open, self._before_open = self._before_open, None
        if self.protocol.state is not OPEN:
            return
        # The fast path may take over only at a frame boundary: when nothing but the
        # request came before the response (RFC 6455 4.1: clients wait for it).
        if before_open is not None and before_open.find(b"\r\n\r\n") == len(before_open) - 4:
            self._partial = bytearray()
        if self._timer is not None:
            self._timer.cancel()
        self.open = True
        try:
            await self.session.open_session(self)
        except Exception:
            log.exception("opening the session of %s failed", self.username)
            self.start_close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        self.ready = True
        self._wake_worker()

    def _handshake_timed_out(self) -> None:
        if self.protocol.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    # -- reading --------------------------------------------------------------------------

    def _frame_received(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragment_opcode = frame.opcode
            self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
        else:
            return  # ping, pong and close are answered by the protocol itself
        if not frame.fin:
            return
        data = b"".join(self._fragments)
        self._fragments = []
        if self._fragment_opcode is Opcode.BINARY:
            self._queue_message(None)  # binary frames are refused with an error reply
        else:
            self._text_received(data)

    def _text_received(self, data: bytes) -> None:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8")  # RFC 6455 8.1
            self._send_protocol_data()
            return
        self._queue_message(text)

    def _queue_message(self, message: str | None) -> None:
        if self._worker is None and self.ready and self._publishing < PUBLISH_PIPELINE:
            # Nothing is waiting before it: a message that needs no waiting (a publish
            # the node can check from memory) is handled right here, with no task.
            try:
                action = self.session.handle_now(self, message)
            except Exception:
                log.exception("handling a message of %s failed", self.username)
                return
            if action is not None:
                self._worker = self._spawn(self._work(action))
            return
        self._inbox.append(message)
        if len(self._inbox) >= INBOX_HIGH and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_worker()

    def _wake_worker(self) -> None:
        if self.ready and self._inbox and self._worker is None:
            self._worker = self._spawn(self._work())

    async def _work(self, first: Action | BadFrame | None = None) -> None:
        """Handle this connection's messages in order (``first``, then the inbox): one at
        a time, except that a publish lets the next message in once its append is queued
        (up to ``PUBLISH_PIPELINE`` of them waiting for their commit)."""
        session = self.session
        try:
            if first is not None:
                await session.handle_action(self, first)
            while self._inbox and self.protocol.state is OPEN:
                if self._publishing >= PUBLISH_PIPELINE:
                    await self.publishes_settled()
                    continue
                action = session.handle_now(self, self._inbox.popleft())
                if action is not None:
                    await session.handle_action(self, action)
                if self._reading_paused and len(self._inbox) <= INBOX_LOW:
                    self._reading_paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
        finally:
            self._worker = None

    def pipeline_publish(self, finish: Committed) -> Committed:
        """Count a publish as in flight (its append is about to be queued) and return the
        store's callback for it: ``finish`` (reply, announce), then the count goes down.

        The store calls these in submission order once committed, so the replies of one
        connection leave in request order, and a busy publisher costs no task, no future
        and no loop callback per message."""
        self._publishing += 1

        def done(result: AppendResult | Exception) -> None:
            try:
                finish(result)
            finally:
                self._publishing -= 1
                settled = self._publishes_settled
                if not self._publishing and settled is not None:
                    self._publishes_settled = None
                    if not settled.done():
                        settled.set_result(None)

        return done

    async def publishes_settled(self) -> None:
        """Wait until every publish in flight has replied, so the next reply follows."""
        while self._publishing:
            if self._publishes_settled is None:
                self._publishes_settled = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._publishes_settled)

    # -- writing --------------------------------------------------------------------------

    def send(self, payload: bytes) -> bool:
        """Queue one text frame for this iteration's write (replies, invitations)."""
        return self.send_frame(text_frame(payload))

    def send_frame(self, frame: bytes) -> bool:
        """Queue a pre-built frame; False if the connection is closing or too slow."""
        if not self.open or (not self._out and not self._start_batch()):
            return False
        self._out.append(frame)
        return True

    def _start_batch(self) -> bool:
        """Before the first frame of this loop iteration: False (and the 1013 close) if the
        client is too slow, else the coalescer will flush us.

        Only what the kernel would not take counts: the frames queued in one iteration are
        a burst (a group commit's worth), not a sign of a slow reader, and the backlog
        cannot grow before the flush, so this is the one check an iteration needs."""
        # Only a paused transport can hold more than buffer_limit (its high water is at
        # most that), so a healthy connection pays one attribute read here.
        if self._writing_paused:
            assert self.transport is not None
            if self.transport.get_write_buffer_size() > self.buffer_limit:
                self.close_slow()
                return False
        self.coalescer.mark(self)
        return True

    def flush_out(self) -> None:
        if not self._out and not self._out_seqs:
            return
        out, self._out = self._out, []
        seqs, self._out_seqs = self._out_seqs, {}
        self._out_size = 0
        transport = self.transport
        if transport is None or transport.is_closing() or self.protocol.state is not OPEN:
            return  # never written, so never delivered: it stays pending for the next one
        if out:
            self._write(transport, out[0] if len(out) == 1 else b"".join(out))
        if seqs and not self.manual_ack:
            self._cursor_updates.update(seqs)
            self._cursor_dirty.add(self)

    async def send_replay(self, topic_id: int, last_seq: int, frames: bytes) -> bool:
        """Write a page of pending messages of one topic (its frames, ``last_seq`` the
        page's last), waiting for the socket rather than overflowing it.

        Returns False (and writes nothing) once the connection is closing."""
        if not self.open or self.transport is None:
            return False
        if not self._out:
            self.coalescer.mark(self)
        self._out.append(frames)
        self._out_size += len(frames)
        self._written(topic_id, last_seq)
        if self._out_size >= 65536:
            self.flush_out()
            if self._writing_paused:
                self._drained = asyncio.get_running_loop().create_future()
                await self._drained
        return True

    def finish_replay_writes(self) -> None:
        """Write what the replay queued (before any live frame)."""
        self.flush_out()

    def _written(self, topic_id: int, seq: int) -> None:
        """A message frame was queued: later copies are duplicates, and the cursor moves
        when the queue is written."""
        self.sent_seq[topic_id] = seq
        self._out_seqs[topic_id] = seq

    def deliver(self, topic_id: int, seq: int, frame: bytes) -> bool:
        """A live message event (a pre-built frame); returns True if it was queued.

        Only a frame actually queued moves the cursor: a message that reaches a closing
        connection (or the one that finds it too slow) stays pending for the next one.
        This runs once per subscriber per message, so it is ``send_frame`` and
        ``_written`` inlined.
        """
        if self._held is not None:
            self._held.append((topic_id, seq, frame))
            return False
        sent_seq = self.sent_seq
        if seq <= sent_seq.get(topic_id, 0) or not self.open:
            return False
        if not self._out and not self._start_batch():
            return False
        self._out.append(frame)
        sent_seq[topic_id] = seq
        self._out_seqs[topic_id] = seq
        return True

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write queued frames: straight to the socket when the transport holds nothing
        back (so order is kept), as asyncio's write() would after ~0.5 µs of checks in
        Python, paid per subscriber per message. What the kernel does not take, and any
        error, go through the transport, which keeps the order and handles the error."""
        if self._fd >= 0 and not transport.get_write_buffer_size():
            try:
                written = os.write(self._fd, data)
            except OSError:
                written = 0
            if written < len(data):
                transport.write(data[written:])
        else:
            transport.write(data)

    def write_live(self, topic_id: int, seq: int, frame: bytes) -> bool:
        """``deliver`` then ``flush_out``, for what the fan-out meets most below saturation:
        one message this iteration, to a connection with nothing else queued. Returns True
        if it was written. At 1,000 subscribers a message pays for this 1,000 times, each
        on a connection out of the CPU's caches, so it is one call with the checks inlined.
        """
        if self._out or self._out_seqs or self._held is not None or self._writing_paused:
            delivered = self.deliver(topic_id, seq, frame)  # the general path
            self.flush_out()
            return delivered
        sent_seq = self.sent_seq
        if seq <= sent_seq.get(topic_id, 0) or not self.open:
            return False
        transport = self.transport
        if transport is None or transport.is_closing() or self.protocol.state is not OPEN:
            return False  # never written, so never delivered: it stays pending
        self._write(transport, frame)
        sent_seq[topic_id] = seq
        if not self.manual_ack:
            self._cursor_updates[topic_id] = seq
            self._cursor_dirty.add(self)
        return True

    def finish_replay(self, replayed_upto: dict[int, int]) -> int:
        """End the replay: release held live events, dropping what the replay covered."""
        for topic_id, upto in replayed_upto.items():
            # The range is done (own messages in it are never pending for us either).
            self.sent_seq[topic_id] = max(self.sent_seq.get(topic_id, 0), upto)
            self._out_seqs[topic_id] = self.sent_seq[topic_id]
        self.flush_out()
        held, self._held = self._held or [], None
        return sum(self.deliver(topic_id, seq, frame) for topic_id, seq, frame in held)

    def ping(self) -> None:
        """Keepalive: a ping frame (the client's pong, or anything, refreshes last_seen)."""
        if self.open and self.transport is not None:
            self.flush_out()
            self.transport.write(PING_FRAME)

    # -- closing --------------------------------------------------------------------------

    def close_slow(self) -> None:
        if not self.open:
            return
        log.info(
            "closing slow consumer %s (send buffer over %d bytes)", self.username, self.buffer_limit
        )
        if self.on_slow is not None:
            self.on_slow()
        self.start_close(CloseCode.TRY_AGAIN_LATER, "too slow to keep up: reconnect")

    def start_close(self, code: int, reason: str = "") -> None:
        """Send a close frame after whatever is queued, and cut the TCP connection if the
        client does not answer within the close timeout."""
        self.flush_out()
        self.open = False
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self._send_protocol_data()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.close_timeout, self.abort)

    async def close(self, code: int, reason: str = "") -> None:
        self.start_close(code, reason)
        await asyncio.shield(self.closed)

    def abort(self) -> None:
        if self.transport is not None and not self.closed.done():
            self.transport.abort()

    def _send_protocol_data(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                if self._out and self.protocol.state is not OPEN:
                    # Closing: nothing may follow the close frame. Unwritten frames do not
                    # move the cursor, so their messages stay pending.
                    self._out.clear()
                    self._out_seqs.clear()
                    self._out_size = 0
                transport.write(data)
            else:
                transport.close()  # end of stream: websockets says the TCP side may close
                return
        if self.protocol.close_expected() and (self._timer is None or self._timer.cancelled()):
            self.open = False
            self._timer = asyncio.get_running_loop().call_later(self.close_timeout, self.abort)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- cursors --------------------------------------------------------------------------

    def acknowledge(self, topic_id: int, seq: int) -> None:
        if seq > self._cursor_updates.get(topic_id, 0):
            self._cursor_updates[topic_id] = seq
            self._cursor_dirty.add(self)

    def take_cursor_updates(self) -> list[CursorUpdate]:
        if not self._cursor_updates:
            return []
        user_id = self.user.id
        updates = [
            CursorUpdate(user_id, topic_id, seq) for topic_id, seq in self._cursor_updates.items()
        ]
        self._cursor_updates = {}
        return updates

    def restore_cursor_updates(self, updates: list[CursorUpdate]) -> None:
        """Put back updates whose write failed, so the next flush retries them."""
        for update in updates:
            self.acknowledge(update.topic_id, update.seq)
