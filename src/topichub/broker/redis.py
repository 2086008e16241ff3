"""The Redis broker: events cross nodes over one Redis pub/sub channel.

Each node delivers its own events locally first, then publishes them tagged with its node
id; every node drops its own echoes. Redis pub/sub keeps nothing: after a lost connection
the broker reconnects with backoff and calls ``resync`` so the node re-reads from the store
whatever it may have missed (the log makes this safe). A publish while Redis is down is
not an error for the publisher (the message is already stored): the event is kept and sent
on reconnect, so members on other nodes get it without waiting for their next message.

Publishing never waits on Redis: events queue in an outbox that one sender task drains in
order, many events per pub/sub message (``broker/codec.py``, "batch") and several
messages per round trip. A receiver so pays Redis's per-message cost once per batch, and
skips its own batches by their first bytes.

URL: ``redis://host:port/db?channel=NAME`` (channel defaults to ``topichub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from topichub.broker.base import Broker, BrokerEvent, EventHandler, Resync, ResyncHandler
from topichub.broker.codec import batch_sender, decode_batch, encode_batches
from topichub.errors import Unavailable

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0
PUBLISH_TIMEOUT = 1.0
SEND_BATCH = 4096  # events per round trip to Redis (in messages of up to 256 KiB)
BACKLOG = 10_000  # events kept while Redis is away; past that, nodes re-read the store


def split_channel(url: str) -> tuple[str, str]:
    """(connection URL, channel name) from a broker URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    channel = next((v for k, v in query if k == "channel"), "topichub")
    rest = urlencode([(k, v) for k, v in query if k != "channel"])
    return urlunsplit(parts._replace(query=rest)), channel


class RedisBroker(Broker):
    def __init__(self, url: str) -> None:
        self.url, self.channel = split_channel(url)
        self.node_id = uuid.uuid4().hex
        self.connected = False
        self.reconnects = 0
        self.publish_errors = 0
        self._handler: EventHandler | None = None
        self._resync: ResyncHandler | None = None
        self._client: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # Events not yet sent to Redis, oldest first (kept through an outage).
        self._outbox: deque[BrokerEvent] = deque()
        self._outbox_overflowed = False
        self._wake_sender = asyncio.Event()

    async def start(self, handler: EventHandler, resync: ResyncHandler | None = None) -> None:
        self._handler = handler
        self._resync = resync
        self._client = Redis.from_url(
            self.url, socket_connect_timeout=2, socket_timeout=None, health_check_interval=5
        )
        self._listener = asyncio.create_task(self._listen(), name="redis-broker")
        self._sender = asyncio.create_task(self._send(), name="redis-broker-sender")
        # Start only once subscribed, so no event published after start() is missed.
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def _listen(self) -> None:
        assert self._client is not None
        backoff = 0.05
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected = True
                self._subscribed.set()
                backoff = 0.05
                if not first:
                    await self._recover()
                first = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._receive(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("redis broker lost its connection: %s", exc)
                self.connected = False
                self.reconnects += 1
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py stub gap
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    def _receive(self, data: bytes) -> None:
        if batch_sender(data) == self.node_id:
            return  # our own echo: delivered locally already
        try:
            node, events = decode_batch(data)
        except Exception:
            log.exception("redis broker: skipping a message it cannot read")
            return
        if node == self.node_id:
            return
        for event in events:
            if self._handler is None:
                return
            if isinstance(event, Resync):
                if self._resync is not None:
                    self._resync()
                continue
            self._handler(event)

    async def _recover(self) -> None:
        """Back after an outage: send what could not be sent, then catch up ourselves."""
        log.warning("redis broker reconnected; re-syncing from the store")
        self._wake_sender.set()
        if self._resync is not None:
            self._resync()

    def publish(self, event: BrokerEvent) -> None:
        if self._handler is None or self._client is None:
            raise Unavailable("the broker is not running")
        self._handler(event)
        if len(self._outbox) < BACKLOG:
            self._outbox.append(event)
        else:
            self._outbox_overflowed = True  # the other nodes will re-read the store
        if not self.connected:
            self.publish_errors += 1  # stored already: kept for the reconnect
        self._wake_sender.set()

    def _encode(self, batch: list[BrokerEvent]) -> list[bytes]:
        """The batch as Redis messages. An event that cannot be encoded (a bug, never a
        client's doing) is dropped rather than stopping the sender for good: its message
        is in the store, and the Resync sent once the outbox is empty has every other
        node re-read it from there."""
        try:
            return encode_batches(self.node_id, batch)
        except Exception:
            encodable = []
            for event in batch:
                try:
                    encode_batches(self.node_id, [event])
                except Exception:
                    log.exception("dropped an event the broker cannot encode: %r", event)
                    self.publish_errors += 1
                    self._outbox_overflowed = True
                else:
                    encodable.append(event)
            return encode_batches(self.node_id, encodable)

    async def _send(self) -> None:
        """Drain the outbox in order, a pipeline of up to SEND_BATCH events at a time; an
        event leaves the outbox only once Redis took it."""
        assert self._client is not None
        while True:
            await self._wake_sender.wait()
            self._wake_sender.clear()
            while self._outbox and self.connected:
                batch = [self._outbox[i] for i in range(min(SEND_BATCH, len(self._outbox)))]
                messages = self._encode(batch)
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for message in messages:
                        pipe.publish(self.channel, message)
                    await asyncio.wait_for(pipe.execute(), PUBLISH_TIMEOUT)
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("redis publish failed (%s); kept for the reconnect", exc)
                    self.publish_errors += len(batch)
                    await asyncio.sleep(0.1)
                    continue
                for _ in batch:
                    self._outbox.popleft()
            if self._outbox_overflowed and self.connected and not self._outbox:
                # Too much was kept back to replay: every node re-reads the store instead.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(
                        self._client.publish(
                            self.channel, encode_batches(self.node_id, [Resync()])[0]
                        ),
                        PUBLISH_TIMEOUT,
                    )
                    self._outbox_overflowed = False

    def stats(self) -> dict[str, int]:
        return {
            "connected": int(self.connected),
            "reconnects": self.reconnects,
            "publish_errors": self.publish_errors,
        }

    async def ping(self) -> None:
        if self._client is None or not self.connected:
            raise Unavailable("not connected to redis")
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis: {exc}") from exc

    async def close(self) -> None:
        # What is queued still goes out (a graceful stop loses no event), unless Redis is
        # away: then the other nodes catch up from the store when they notice.
        for _ in range(int(PUBLISH_TIMEOUT / 0.01)):
            if not (self._outbox and self.connected):
                break
            await asyncio.sleep(0.01)
        for task in (self._sender, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._handler = None
        self.connected = False
