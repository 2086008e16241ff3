"""The node's registry of local connections, and the fan-out of broker events to them.

Each message event is encoded once per topic (once per side of a direct conversation) and
the same bytes are handed to every member connection on this node.

Message events are fanned out once per loop iteration, connection by connection
(:meth:`Hub.deliver_outbox`, run by the write coalescer before it flushes): each connection
gets all of its frames of the iteration at once, and when they are all of one topic (a
single message at a low rate, or a burst on one busy topic) they are written right there,
so the first subscribers have a message while the hub is still visiting the rest and each
connection's state is visited once.

A topic with more than ``SWEEP_CHUNK`` connections here is written a chunk per loop
iteration instead (a :class:`Sweep`): a pass over thousands of sockets takes milliseconds,
and between chunks the node reads its sockets, so replies, other topics' messages and the
next publish (with its commit) are not held behind the whole pass. The sweep goes round
the topic's connections and each visit writes a connection everything it lacks in one
write; a message handed out meanwhile joins the sweep where it stands and is everywhere one
lap later, so under load each connection's turn carries what arrived since its last. Each
big topic has its own sweep, so several share the loop chunk by chunk (order is per topic,
as PROTOCOL.md promises). Who gets a message is still decided when it is handed out: before
the topic's routing changes, what its sweep has not yet written is queued on its
connections (where it stays ahead of anything newer) and the sweep ends.

Per topic the hub also keeps the last ``seq`` it fanned out (a :class:`TopicStream`), so
events reach connections in ``seq`` order with no gap even when the broker reorders or
drops them (several nodes publishing to one topic, a lost Redis connection): an event that
arrives early is held, and if the missing ones do not turn up within ``GAP_WAIT`` seconds
they are read from the store, the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from topichub.broker.base import (
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    Resync,
    TopicDeleted,
    UserDeleted,
)
from topichub.errors import CloseCode
from topichub.gateway.connection import Connection, WriteCoalescer
from topichub.gateway.frames import text_frame
from topichub.models import MessageRecord, Topic, TopicKind
from topichub.observability import Metrics
from topichub.store.base import Store
from topichub.wire.events import invited_event, message_event

log = logging.getLogger(__name__)

GAP_WAIT = 0.05  # most gaps are reorders between nodes that close by themselves
FILL_PAGE = 1000
END_OF_LOG = 2**62
# Connections a sweep visits per loop iteration: at ~7 µs a socket write on loopback, about
# 1 ms of the loop at a time.
SWEEP_CHUNK = 128


@dataclass(slots=True)
class TopicStream:
    topic: Topic
    last: int  # highest seq fanned out on this node
    counted: int = -1  # highest seq counted as published (a rewind fans out some again)
    held: dict[int, MessageRecord] = field(default_factory=dict)
    filling: bool = False
    resync: bool = False  # read the store to its end (events may have been lost)


class Sweep:
    """One topic's messages going round its connections a chunk per loop iteration.

    Each visit writes a connection everything it lacks, in one write; a message joins at
    the sweep's current place and is everywhere one lap later, so under load each turn
    carries what arrived since the connection's last. The connections are the topic's
    members when the sweep started; a change of them ends the sweep first (``settle``)."""

    __slots__ = ("conns", "end", "messages", "topic_id", "visits")

    def __init__(self, topic_id: int, conns: list[Connection]) -> None:
        self.topic_id = topic_id
        self.conns = conns
        # (seq, frame, visits when added): each is everywhere ``len(conns)`` visits later.
        self.messages: deque[tuple[int, bytes, int]] = deque()
        self.visits = 0
        self.end = 0  # the sweep is done at this many visits

    def add(self, seq: int, frame: bytes) -> None:
        self.messages.append((seq, frame, self.visits))
        self.end = self.visits + len(self.conns)

    def _next(self, count: int) -> list[Connection]:
        """The ``count`` connections from the sweep's place on, round the end."""
        conns = self.conns
        start = self.visits % len(conns)
        ahead = conns[start : start + count]
        return ahead + conns[: count - len(ahead)] if len(ahead) < count else ahead

    def visit(self, count: int) -> int:
        """Visit the next ``count`` connections; returns the frames written."""
        messages = self.messages
        while messages and messages[0][2] + len(self.conns) <= self.visits:
            messages.popleft()  # every connection has it
        batch = self._next(count)
        self.visits += count
        topic_id = self.topic_id
        delivered = 0
        if len(messages) == 1:
            seq, frame, _ = messages[0]
            for conn in batch:
                delivered += conn.write_live(topic_id, seq, frame)
            return delivered
        for conn in batch:
            for seq, frame, _ in messages:
                delivered += conn.deliver(topic_id, seq, frame)
            conn.flush_out()
        return delivered

    def settle(self) -> int:
        """Queue what the connections not yet visited lack (the coalescer writes it)."""
        topic_id = self.topic_id
        delivered = 0
        for conn in self._next(self.end - self.visits):
            for seq, frame, _ in self.messages:
                delivered += conn.deliver(topic_id, seq, frame)
        self.messages.clear()
        self.end = self.visits
        return delivered


def _stream_topic(topic_id: int, name: str, direct_pair: tuple[str, str] | None) -> Topic:
    """The Topic a stream needs to read its log (id, name, direct pair) when the node only
    knows it from an event."""
    kind = TopicKind.DIRECT if direct_pair else TopicKind.PUBLIC
    return Topic(topic_id, name, kind, None, 0, 0, direct_pair)


class Hub:
    def __init__(self, metrics: Metrics, store: Store) -> None:
        self.metrics = metrics
        self.store = store
        self.by_topic: defaultdict[int, set[Connection]] = defaultdict(set)
        # Connections stay listed under their user until their final cursor flush is done,
        # so the user's next connection can wait for it (see CursorFlusher.flush_user).
        self.by_user: defaultdict[str, set[Connection]] = defaultdict(set)
        self.streams: dict[int, TopicStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Messages of this loop iteration not yet handed to connections: (topic id, seq,
        # the frame, or for a direct message each side's frame by username).
        self._outbox: list[tuple[int, int, bytes | dict[str, bytes]]] = []
        self._sweeps: dict[int, Sweep] = {}  # by topic id
        self.coalescer = WriteCoalescer(before_flush=self.deliver_outbox)

    def connections(self) -> list[Connection]:
        return [conn for conns in self.by_user.values() for conn in conns]

    def add_user(self, conn: Connection) -> None:
        """From now on membership changes and direct messages reach ``conn``."""
        self.by_user[conn.username].add(conn)
        self.metrics.connections.inc()

    def add_topics(self, conn: Connection, topics: list[Topic]) -> None:
        for topic in topics:
            self._route(conn, topic.id)
            self._follow(topic, topic.last_seq)

    def _follow(self, topic: Topic, since: int) -> TopicStream:
        """The topic's stream, started after ``since`` if the node did not follow it yet:
        what other nodes published before that may still be on its way, and must not be
        taken as already sent."""
        stream = self.streams.get(topic.id)
        if stream is None:
            stream = self.streams[topic.id] = TopicStream(topic, since)
        return stream

    def _route(self, conn: Connection, topic_id: int) -> None:
        self._hand_out(topic_id)  # to the connections that were members when it was sent
        conn.topic_ids.add(topic_id)
        self.by_topic[topic_id].add(conn)

    def _unroute(self, conn: Connection, topic_id: int) -> None:
        self._hand_out(topic_id)
        conn.topic_ids.discard(topic_id)
        conns = self.by_topic.get(topic_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_topic[topic_id]
                self.streams.pop(topic_id, None)

    def stop_routing(self, conn: Connection) -> None:
        """No more events reach ``conn``; it stays listed under its user until forgotten."""
        for topic_id in list(conn.topic_ids):
            self._unroute(conn, topic_id)

    def forget(self, conn: Connection) -> None:
        self.stop_routing(conn)
        conns = self.by_user.get(conn.username)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self.metrics.connections.dec()
            if not conns:
                del self.by_user[conn.username]

    # -- broker events --------------------------------------------------------------------

    def handle(self, event: BrokerEvent) -> None:
        if type(event) is MessagePublished:  # nearly every event: one test, not a match
            self._on_message(event.record)
            return
        self._hand_out()  # what was published before the event goes out before it
        match event:
            case MembershipChanged(topic_id=topic_id, joined=True):
                invite = (
                    invited_event(event.topic_name, event.invited_by) if event.invited_by else None
                )
                joining = [c for c in self.by_user.get(event.username, ()) if c.open]
                since = event.since_seq
                stream = None
                if joining and since is not None:
                    stream = self._follow(_stream_topic(topic_id, event.topic_name, None), since)
                for conn in joining:
                    self._route(conn, topic_id)
                    if invite is not None:
                        conn.send(invite)
                if stream is not None and since is not None and stream.last > since:
                    self._rewind(stream, since)
            case MembershipChanged(topic_id=topic_id, joined=False):
                for conn in self.by_user.get(event.username, ()):
                    self._unroute(conn, topic_id)
            case TopicDeleted(topic_id=topic_id):
                for conn in list(self.by_topic.get(topic_id, ())):
                    self._unroute(conn, topic_id)
            case Resync():
                self.resync()
            case UserDeleted(username=username):
                for conn in list(self.by_user.get(username, ())):
                    conn.open = False
                    self.stop_routing(conn)
                    self._spawn(self._close(conn, CloseCode.POLICY_VIOLATION, "account deleted"))

    def _on_message(self, record: MessageRecord) -> None:
        topic_id = record.topic_id
        if record.direct_pair is not None:
            # A direct conversation may be new: route its users' connections to it.
            for username in record.direct_pair:
                for conn in self.by_user.get(username, ()):
                    if conn.open and topic_id not in conn.topic_ids:
                        self._route(conn, topic_id)
        if topic_id not in self.by_topic:
            return  # nobody on this node listens
        # A stream starts here only for a direct conversation its connections were just
        # routed to: they connected before it existed, so all of it is new to them. Its
        # first event here need not be its first message (another node's may be late),
        # so the stream starts at 0 and an early event waits for the rest (held, then
        # read from the store); it must not take the earlier messages as already sent.
        stream = self.streams.get(topic_id) or self._follow(
            _stream_topic(topic_id, record.topic_name, record.direct_pair),
            0 if record.direct_pair is not None else record.seq - 1,
        )
        if record.seq <= stream.last:
            return  # already fanned out (a re-read overlapping a late event)
        if record.seq > stream.last + 1:
            stream.held[record.seq] = record
            self._schedule_fill(stream, GAP_WAIT)
            return
        self._fan_out(record, stream)
        stream.last = record.seq
        if stream.held:  # rarely: events that arrived early, waiting for this one
            self._release_held(stream)

    def _release_held(self, stream: TopicStream) -> None:
        while stream.held and stream.last + 1 in stream.held:
            record = stream.held.pop(stream.last + 1)
            self._fan_out(record, stream)
            stream.last = record.seq

    def _fan_out(self, record: MessageRecord, stream: TopicStream) -> None:
        """Encode ``record`` once (once per side of a direct conversation) and queue it for
        this iteration's :meth:`deliver_outbox`."""
        frames: bytes | dict[str, bytes]
        if record.direct_pair is None:
            frames = text_frame(message_event(record, ""))  # once, for every socket
        else:
            frames = {
                name: text_frame(message_event(record, name)) for name in set(record.direct_pair)
            }
        if not self._outbox:
            self.coalescer.schedule()
        self._outbox.append((record.topic_id, record.seq, frames))
        if record.seq > stream.counted:
            stream.counted = record.seq
            self.metrics.fan_out.published += 1

    def _hand_out(self, topic_id: int | None = None) -> None:
        """Before the routing changes (of ``topic_id``, or of anything): what was published
        so far reaches the connections that were members when it was."""
        if topic_id is None:
            for swept in list(self._sweeps):
                self._settle_sweep(swept)
        elif topic_id in self._sweeps:
            self._settle_sweep(topic_id)
        if self._outbox:
            self.deliver_outbox()

    def deliver_outbox(self) -> None:
        """Hand this iteration's messages to their topics' connections: big topics' to
        their sweeps; for the others, one connection at a time and each topic's messages
        in seq order; when they are all of one topic, write each connection as soon as it
        has them (with the replies it queued meanwhile)."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        by_topic: dict[int, list[tuple[int, bytes | dict[str, bytes]]]] = {}
        for topic_id, seq, frames in outbox:
            by_topic.setdefault(topic_id, []).append((seq, frames))
        for topic_id in [t for t, messages in by_topic.items() if self._sweep_out(t, messages)]:
            del by_topic[topic_id]
        write_now = len(by_topic) == 1
        delivered = 0
        for topic_id, messages in by_topic.items():
            conns = self.by_topic.get(topic_id, ())
            if write_now and len(messages) == 1:
                seq, frame = messages[0]
                if isinstance(frame, bytes):  # one message for all: the low-rate case
                    for conn in conns:
                        delivered += conn.write_live(topic_id, seq, frame)
                    continue
            for conn in conns:
                for seq, frames in messages:
                    if isinstance(frames, bytes):
                        delivered += conn.deliver(topic_id, seq, frames)
                    else:
                        side = frames.get(conn.username)
                        if side is not None:
                            delivered += conn.deliver(topic_id, seq, side)
                if write_now:
                    conn.flush_out()
        self.metrics.fan_out.deliveries += delivered

    def _sweep_out(
        self, topic_id: int, messages: list[tuple[int, bytes | dict[str, bytes]]]
    ) -> bool:
        """Hand one topic's messages to its sweep: the one under way, or a new one when the
        topic has more than ``SWEEP_CHUNK`` connections here. False if neither."""
        sweep = self._sweeps.get(topic_id)
        if sweep is None and len(self.by_topic.get(topic_id, ())) <= SWEEP_CHUNK:
            return False
        frames = [(seq, frame) for seq, frame in messages if isinstance(frame, bytes)]
        if len(frames) < len(messages):  # a direct conversation's (a frame per side)
            if sweep is not None:
                self._settle_sweep(topic_id)
            return False
        started = sweep is None
        if sweep is None:
            sweep = self._sweeps[topic_id] = Sweep(topic_id, list(self.by_topic[topic_id]))
        for seq, frame in frames:
            sweep.add(seq, frame)
        if started:
            self._continue_sweep(sweep)  # the first chunk now, with this flush
        return True

    def _continue_sweep(self, sweep: Sweep) -> None:
        """Visit the next chunk of ``sweep``'s connections; come back next iteration."""
        if self._sweeps.get(sweep.topic_id) is not sweep:
            return  # settled meanwhile
        count = min(SWEEP_CHUNK, sweep.end - sweep.visits)
        try:
            self.metrics.fan_out.deliveries += sweep.visit(count)
        finally:  # whatever one chunk meets, the sweep goes on (or ends): never left stuck
            if sweep.visits < sweep.end:
                asyncio.get_running_loop().call_soon(self._continue_sweep, sweep)
            else:
                del self._sweeps[sweep.topic_id]

    def _settle_sweep(self, topic_id: int) -> None:
        """Queue what the topic's sweep has not written yet on its connections (the
        coalescer writes it with whatever they get next), and end the sweep."""
        self.metrics.fan_out.deliveries += self._sweeps.pop(topic_id).settle()

    # -- catching up from the store -------------------------------------------------------

    def resync(self) -> None:
        """Events may have been lost (the broker reconnected): re-read memberships and
        every followed topic's log from the store."""
        for stream in self.streams.values():
            stream.resync = True
            self._schedule_fill(stream, 0)
        self._spawn(self._refresh_memberships())

    def _rewind(self, stream: TopicStream, since: int) -> None:
        """Connections just joined at ``since``, and this node already fanned out past it
        (the join event arrived after later messages, from another node or while the join
        was being stored): fan out again from ``since``, from the store. Connections that
        had those messages drop them by seq; the joining ones get them, in order, before
        anything newer (held meanwhile)."""
        stream.last = since
        stream.resync = True  # read up to the end of the log, then go live again
        self._schedule_fill(stream, 0)

    def _schedule_fill(self, stream: TopicStream, wait: float) -> None:
        if not stream.filling:
            stream.filling = True
            self._spawn(self._fill(stream, wait))

    async def _fill(self, stream: TopicStream, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            await self._catch_up(stream)
        except Exception:
            log.exception("could not catch up topic %s from the store", stream.topic.name)
            self.metrics.store_errors.inc()
            stream.filling = False
            self._schedule_fill(stream, 1.0)
            return
        stream.filling = False

    async def _catch_up(self, stream: TopicStream) -> None:
        """Fan out from the store whatever is missing before the held events (or, on a
        resync, up to the end of the log)."""
        while self.streams.get(stream.topic.id) is stream:
            if stream.held:
                upto = min(stream.held) - 1
            elif stream.resync:
                upto = END_OF_LOG
            else:
                return
            after = stream.last
            records = await self.store.read_range(
                stream.topic,
                after=after,
                upto=upto,
                exclude_sender_id=None,
                limit=FILL_PAGE,
            )
            if stream.last < after:
                continue  # rewound while reading: read again from there
            for record in records:
                if record.seq > stream.last:  # a hole left by retention is skipped
                    self._fan_out(record, stream)
                    stream.last = record.seq
            if not records and upto != END_OF_LOG:
                stream.last = max(stream.last, upto)  # gone from the store: skip the gap
            self._release_held(stream)
            if len(records) < FILL_PAGE and not stream.held:
                stream.resync = False

    async def _refresh_memberships(self) -> None:
        for username, conns in list(self.by_user.items()):
            live = [c for c in conns if c.open]
            if not live:
                continue
            try:
                topics = await self.store.user_topics(live[0].user.id)
            except Exception:
                log.exception("could not refresh the memberships of %s", username)
                continue
            wanted = {topic.id for topic in topics}
            for conn in live:
                for topic_id in conn.topic_ids - wanted:
                    self._unroute(conn, topic_id)
                self.add_topics(conn, [t for t in topics if t.id not in conn.topic_ids])

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _close(conn: Connection, code: int, reason: str) -> None:
        await conn.close(code, reason)
