"""The load generator: one process, one event loop (uvloop when installed), picows clients.

Run as ``python -m bench.loadgen`` with a JSON job on stdin; it prints progress on stderr and
its result as one JSON line on stdout. The orchestrator (:mod:`bench.workloads`) starts one
per job, pinned to its own core.

The receive path is kept lean so the generator is not the bottleneck: a message event is
recognised and its ``seq`` read by byte search, not JSON parsing; every subscriber checks
that its ``seq`` values arrive in order with no gap and no duplicate, so at the end "every
subscriber got every seq exactly once" is a comparison of first/last/count per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.common import CLOCK_TICKS, content_now, cpu_seconds, memory_kib, percentile, rss_kib
from bench.fanrecv import FanRecv
from bench.procs import LOADGEN_CORE, SERVER_CORE, Pinning, raise_nofile
from bench.profile import recording

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
SEQ_KEY = b'"seq":'
RESULT_KEY = b'"result":'
CONTENT_KEY = b'"content":"'
TOPIC_KEY = b'"topic_name":"'
PENDING_TRUE = b'"pending":true'
NEVER = 1 << 62


def log(*parts: object) -> None:
    print("loadgen:", *parts, file=sys.stderr, flush=True)


# -- dialects: topichub's JSON protocol, and Socket.IO for the python-socketio baseline -----


class Dialect:
    """topichub's wire protocol (also spoken by the picows and websockets baselines)."""

    name = "topichub"

    def url(self, base: str, token: str) -> str:
        return f"{base}/{token}"

    def opened(self, client: Client, transport: WSTransport, data: bytes) -> bool:
        """Handle a frame before the handshake is done; True once it is."""
        if b'"event":"connected"' in data:
            client.hello = orjson.loads(data)
            return True
        return False

    def subscribe(self, topic: str, ref: int) -> bytes:
        return orjson.dumps({"action": "subscribe", "topic_name": topic, "ref": ref})

    def publish(self, topic: bytes, content: bytes, ref: int) -> bytes:
        return b'{"action":"message","topic_name":"%s","content":"%s","ref":%d}' % (
            topic,
            content,
            ref,
        )

    def reply(self, data: bytes) -> tuple[int, dict[str, Any]] | None:
        if RESULT_KEY not in data:
            return None
        body = orjson.loads(data)
        ref = body.get("ref")
        return (ref if isinstance(ref, int) else -1), body

    def control(self, client: Client, transport: WSTransport, data: bytes) -> None:
        pass


class SocketIODialect(Dialect):
    """Engine.IO 4 / Socket.IO 5 over a WebSocket: ``0`` open, ``40`` connect, ``42`` event,
    ``43`` ack, ``2``/``3`` ping/pong. Events carry the same message dict as topichub's."""

    name = "socketio"

    def url(self, base: str, token: str) -> str:
        return f"{base}/socket.io/?EIO=4&transport=websocket"

    def opened(self, client: Client, transport: WSTransport, data: bytes) -> bool:
        if data[:1] == b"0":
            transport.send(TEXT, b"40")
            return False
        if data[:2] == b"40":
            client.hello = {"event": "connected", "pending": 0}
            return True
        return False

    def subscribe(self, topic: str, ref: int) -> bytes:
        return b'42%d["subscribe",{"topic_name":"%s"}]' % (ref, topic.encode())

    def publish(self, topic: bytes, content: bytes, ref: int) -> bytes:
        return b'42%d["publish",{"topic_name":"%s","content":"%s"}]' % (ref, topic, content)

    def reply(self, data: bytes) -> tuple[int, dict[str, Any]] | None:
        if data[:2] != b"43":
            return None
        start = data.index(b"[")
        body = orjson.loads(data[start:])[0]
        return int(data[2:start]), body

    def control(self, client: Client, transport: WSTransport, data: bytes) -> None:
        if data == b"2":
            transport.send(TEXT, b"3")


DIALECTS: dict[str, Dialect] = {"topichub": Dialect(), "socketio": SocketIODialect()}


# -- the shared counters and the clients ----------------------------------------------------


RING = 1 << 16  # receipts are counted per seq in a ring this long


class Gen:
    """Counters shared by all clients of this process: deliveries in total, receipts per
    seq (how many counted subscribers got it), and one waiter on either."""

    def __init__(self) -> None:
        self.total = 0  # deliveries to counted subscribers
        self.receivers = 0  # counted subscribers
        self.ring = [0] * RING  # receipts of seq s at ring[s % RING]
        self.wake_at = NEVER  # wake the waiter when total reaches this...
        self.wake_seq = -1  # ...or when every counted subscriber has this seq
        self._waiter: asyncio.Future[None] | None = None
        self.lat_on = False
        self.lat: list[int] = []

    def wake(self) -> None:
        self.wake_at = NEVER
        self.wake_seq = -1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def complete(self, seq: int) -> bool:
        return self.ring[seq % RING] >= self.receivers

    async def wait_total(self, target: int, seconds: float) -> None:
        if self.total >= target:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        self.wake_at = target
        try:
            await asyncio.wait_for(self._waiter, seconds)
        except TimeoutError:
            raise RuntimeError(
                f"deliveries stalled at {self.total} of {target} for {seconds:.0f} s"
            ) from None

    async def wait_complete(self, seq: int, seconds: float) -> None:
        """Until every counted subscriber has received ``seq``."""
        if self.complete(seq):
            return
        self._waiter = asyncio.get_running_loop().create_future()
        self.wake_seq = seq
        try:
            await asyncio.wait_for(self._waiter, seconds)
        except TimeoutError:
            raise RuntimeError(
                f"seq {seq} reached {self.receipts(seq)} of {self.receivers} subscribers "
                f"in {seconds:.0f} s"
            ) from None

    def receipts(self, seq: int) -> str:
        return str(self.ring[seq % RING])

    def everyone_has(self, subs: Sequence[Client]) -> int:
        """The highest seq that every one of ``subs`` (the counted ones) has received."""
        return min(s.next - 1 for s in subs)

    async def start_latency(self) -> None:
        self.lat = []
        self.lat_on = True

    async def stop_latency(self) -> list[int]:
        """The publish-to-receive times (ns) of the receipts since ``start_latency``."""
        self.lat_on = False
        return self.lat

    def helper_cpu_seconds(self) -> float:
        """CPU the load generator used outside this process (see RemoteGen)."""
        return 0.0


class RemoteGen(Gen):
    """The counters of subscribers read by ``bench/fanrecv.c`` rather than by this
    process's picows clients: it reports how far every subscriber has got (the watermark:
    each has every seq up to it) and the total, and records the latencies itself."""

    def __init__(self, binary: str) -> None:
        super().__init__()
        self.watermark = -1
        self.recv = FanRecv(binary, self._progress)

    async def attach(self, clients: Sequence[Client]) -> None:
        """Move the reading of ``clients`` (connected and subscribed) to fanrecv."""
        fds = []
        for client in clients:
            assert client.transport is not None
            transport = client.transport.underlying_transport
            transport.pause_reading()
            fds.append(transport.get_extra_info("socket").fileno())
        self.recv.start(fds)
        await self.recv.connect()

    def _progress(self, watermark: int, total: int) -> None:
        self.watermark = watermark
        self.total = total
        if total >= self.wake_at or (self.wake_seq >= 0 and watermark >= self.wake_seq):
            self.wake()

    def complete(self, seq: int) -> bool:
        return self.watermark >= seq

    def receipts(self, seq: int) -> str:
        return "not all (fanrecv counts whole seqs only)"

    def everyone_has(self, subs: Sequence[Client]) -> int:
        return self.watermark

    async def start_latency(self) -> None:
        await self.recv.start_latency()

    async def stop_latency(self) -> list[int]:
        return await self.recv.stop_latency()

    def helper_cpu_seconds(self) -> float:
        return self.recv.cpu_seconds()

    async def finish(self, clients: Sequence[Client]) -> None:
        """Stop fanrecv and copy what each of ``clients`` got into it (for the checks)."""
        for client, got in zip(clients, await self.recv.end(), strict=True):
            client.first, client.next, client.count = got.first, got.last + 1, got.count
            client.errors, client.anomalies = got.errors, got.anomalies
            if got.close_code:
                client.close_code = got.close_code


class Client(WSListener):  # type: ignore[misc]
    """One WebSocket connection. Message events go through the lean path in
    :meth:`on_ws_frame`; everything else (handshake, replies, control) through
    :meth:`other`."""

    def __init__(self, gen: Gen, dialect: Dialect, counted: bool = True) -> None:
        self.gen = gen
        self.dialect = dialect
        self.counted = counted
        self.transport: WSTransport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.hello: dict[str, Any] = {}
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.on_reply: Callable[[int, dict[str, Any]], None] | None = None
        self.on_message: Callable[[bytes, int], None] | None = None
        self.first = 0  # first seq received
        self.next = 0  # the seq expected next
        self.count = 0
        self.errors = 0
        self.anomalies: list[tuple[int, int]] = []
        self.close_code: int | None = None
        self.refs = 0

    # picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != TEXT:
            self.control_frame(transport, frame)
            return
        data = frame.get_payload_as_bytes()
        i = data.find(SEQ_KEY)
        if i < 0 or RESULT_KEY in data:
            self.other(transport, data)
            return
        i += 6
        k = data.find(b",", i)
        seq = int(data[i:k] if k > 0 else data[i : data.find(b"}", i)])
        if seq != self.next:
            self.out_of_order(seq)
        self.next = seq + 1
        self.count += 1
        if self.on_message is not None:
            self.on_message(data, seq)
        elif self.counted:
            gen = self.gen
            if gen.lat_on:
                c = data.find(CONTENT_KEY) + 11
                gen.lat.append(time.monotonic_ns() - int(data[c : c + 20]))
            gen.total += 1
            i = seq % RING
            gen.ring[i] += 1
            if gen.total >= gen.wake_at or (seq == gen.wake_seq and gen.ring[i] >= gen.receivers):
                gen.wake()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the handshake completed"))
        for waiter in self.replies.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection closed"))

    # the slow path

    def out_of_order(self, seq: int) -> None:
        if self.next == 0:
            self.first = seq
            return
        self.errors += 1
        if len(self.anomalies) < 5:
            self.anomalies.append((self.next, seq))

    def control_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == CLOSE:
            self.close_code = frame.get_close_code()
            if not transport.is_close_frame_sent:
                transport.send_close(self.close_code)
            transport.disconnect()

    def other(self, transport: WSTransport, data: bytes) -> None:
        if not self.ready.done():
            if self.dialect.opened(self, transport, data):
                self.ready.set_result(None)
            return
        reply = self.dialect.reply(data)
        if reply is None:
            self.dialect.control(self, transport, data)
            return
        ref, body = reply
        waiter = self.replies.pop(ref, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(body)
        elif self.on_reply is not None:
            self.on_reply(ref, body)

    # requests

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(TEXT, data)

    def request_subscribe(self, topic: str) -> asyncio.Future[dict[str, Any]]:
        self.refs += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[self.refs] = waiter
        self.send(self.dialect.subscribe(topic, self.refs))
        return waiter

    def close(self) -> None:
        if self.transport is not None and not self.gone.done():
            if not self.transport.is_close_frame_sent:
                self.transport.send_close(1000)
            self.transport.disconnect()

    def summary(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "last": self.next - 1,
            "count": self.count,
            "errors": self.errors,
        }


async def connect_all(
    urls: Sequence[str],
    factory: Callable[[int], Client],
    concurrency: int,
    source_ips: int = 1,
    tiny_socket: Callable[[int], bool] | None = None,
) -> list[Client]:
    """Open connections with at most ``concurrency`` handshakes in flight; each returns
    once its handshake (``connected`` event) is done. ``tiny_socket(i)`` picks connections
    whose socket gets a small receive buffer and MSS (see :func:`tiny_receiver`)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Client:
        kwargs: dict[str, Any] = {}
        if source_ips > 1:
            kwargs["local_addr"] = (f"127.0.0.{1 + index % source_ips}", 0)
        if tiny_socket is not None and tiny_socket(index):
            kwargs["socket_factory"] = tiny_receiver
        async with gate:
            for attempt in range(5):
                try:
                    _, client = await ws_connect(
                        lambda: factory(index),
                        urls[index],
                        websocket_handshake_timeout=60,
                        max_frame_size=2**24,
                        **kwargs,
                    )
                    await asyncio.wait_for(client.ready, 60)
                    return client  # type: ignore[no-any-return]
                except (OSError, TimeoutError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(i) for i in range(len(urls)))))


def tiny_receiver(url: Any) -> socket.socket:
    """An unconnected socket that, once it stops reading, lets little pile up in the
    kernel: a 4 KiB receive buffer, and a small MSS so that the server's send buffer (sized
    by the kernel from the MSS) stays small too. The server's own outbound buffer then
    fills within seconds, as it would behind a slow mobile link."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def profiling(job: dict[str, Any]) -> contextlib.ExitStack:
    """py-spy on the server from now until ``close()``, if the job asks for a profile."""
    stack = contextlib.ExitStack()
    if job.get("profile"):
        stack.enter_context(recording(Pinning(False), int(job["server_pid"]), Path(job["profile"])))
    return stack


def core_seconds(core: int) -> tuple[float, float]:
    """(busy, steal) seconds of one core from /proc/stat: busy is what tasks ran there
    (user + nice + system) plus the time the hypervisor took away (steal). Interrupt time
    is left out: the server's own loopback packets are processed there."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
                    int(v) for v in line.split()[1:9]
                )
                return (user + nice + system + steal) / CLOCK_TICKS, steal / CLOCK_TICKS
    return float("nan"), float("nan")


Point = tuple[float, tuple[float, float], float, int, tuple[float, float], tuple[float, float]]


def stat_point(server_pid: int, gen: Gen) -> Point:
    user, system = cpu_seconds("self")
    return (
        time.monotonic(),
        cpu_seconds(server_pid),
        user + system + gen.helper_cpu_seconds(),
        gen.total,
        core_seconds(SERVER_CORE),
        core_seconds(LOADGEN_CORE),
    )


def window_stats(start: Point, end: Point) -> dict[str, float]:
    wall = end[0] - start[0]
    user = end[1][0] - start[1][0]
    system = end[1][1] - start[1][1]
    deliveries = end[3] - start[3]
    per = 1e6 / deliveries if deliveries else float("nan")
    return {
        "seconds": wall,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / wall,
        "us_per_delivery": (user + system) * per,
        "us_kernel_per_delivery": system * per,
        "server_cpu_pct": 100 * (user + system) / wall,
        "loadgen_cpu_pct": 100 * (end[2] - start[2]) / wall,
        # Other processes that ran on the server's core meanwhile: when this is high, the
        # server was not alone there and its rate and latency suffer.
        "others_on_server_core_pct": max(
            0.0, 100 * ((end[4][0] - start[4][0]) - (user + system)) / wall
        ),
        "others_on_loadgen_core_pct": max(
            0.0, 100 * ((end[5][0] - start[5][0]) - (end[2] - start[2])) / wall
        ),
        # Time the hypervisor ran something else on the core (ms per s): it comes in
        # slices of milliseconds, each one a stall that shows in the latency's tail.
        "steal_ms_per_s_server_core": 1000 * (end[4][1] - start[4][1]) / wall,
        "steal_ms_per_s_loadgen_core": 1000 * (end[5][1] - start[5][1]) / wall,
    }


# -- fan-out --------------------------------------------------------------------------------


def behind(subs: Sequence[Client], last_seq: int) -> str:
    """Who is missing deliveries, for the error when a drain stalls."""
    if not subs:
        return "(the subscribers are read by fanrecv)"
    late = [s for s in subs if s.counted and s.next - 1 < last_seq]
    gone = [s for s in late if s.gone.done() or s.close_code is not None]
    codes = sorted({str(s.close_code) for s in gone})
    return (
        f"{len(late)} subscriber(s) behind seq {last_seq} (e.g. at "
        f"{[s.next - 1 for s in late[:5]]}), {len(gone)} of them disconnected "
        f"(close codes {codes})"
    )


class Publisher:
    """One publishing connection: closed loop (a window of messages not yet delivered to
    every counted subscriber) or a fixed rate."""

    def __init__(self, gen: Gen, client: Client, dialect: Dialect, topic: str, receivers: int):
        self.gen = gen
        gen.receivers = receivers
        self.client = client
        self.dialect = dialect
        self.topic = topic.encode()
        self.receivers = receivers  # counted subscribers, each gets every message
        self.published = 0
        self.acked = 0
        self.first_seq = 0
        self.last_seq = 0
        self.ack_errors: list[dict[str, Any]] = []
        client.on_reply = self._on_reply

    def _on_reply(self, ref: int, body: dict[str, Any]) -> None:
        if body.get("result") != "ok":
            if len(self.ack_errors) < 5:
                self.ack_errors.append(body)
            return
        self.acked += 1
        seq = body.get("seq")
        if isinstance(seq, int):
            if not self.first_seq:
                self.first_seq = seq
            self.last_seq = max(self.last_seq, seq)

    def publish_one(self) -> None:
        if self.first_seq:  # this message's seq: its receipts start from zero
            self.gen.ring[(self.first_seq + self.published) % RING] = 0
        self.published += 1
        self.client.send(self.dialect.publish(self.topic, content_now(), self.published))

    async def first_ack(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.first_seq:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no acknowledgement in {seconds:.0f} s: {self.ack_errors}")
            await asyncio.sleep(0.001)

    async def closed_loop(self, seconds: float, window: int) -> None:
        """Publish as fast as the subscribers keep up: message n goes out only once every
        counted subscriber has message n - ``window`` (so none falls more than ``window``
        messages behind, and no socket buffer grows without bound)."""
        until = time.monotonic() + seconds
        gen = self.gen
        while time.monotonic() < until:
            if not self.first_seq:  # the first ack tells which seq the topic is at
                if self.published:
                    await self.first_ack(60)
                else:
                    self.publish_one()
                    continue
            waiting_for = self.first_seq + self.published - window
            if waiting_for >= self.first_seq and not gen.complete(waiting_for):
                try:
                    await gen.wait_complete(waiting_for, 60)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}: {behind(self.subscribers, waiting_for)}") from None
            self.publish_one()
            if self.published % 64 == 0:
                await asyncio.sleep(0)  # let reads in even when nothing needs waiting

    async def at_rate(self, seconds: float, rate: float) -> None:
        start = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return
            due = min(int(elapsed * rate) + 1, int(seconds * rate) + 1)
            while sent < due:
                self.publish_one()
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))

    subscribers: Sequence[Client] = ()

    async def drain(self, seconds: float = 60) -> None:
        """Wait until every published message reached every counted subscriber."""
        try:
            await self.gen.wait_total(self.published * self.receivers, seconds)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {behind(self.subscribers, self.last_seq)}") from None

    async def settle(self) -> None:
        """Drain, and wait for the last acknowledgements (before checking seqs)."""
        await self.drain()
        deadline = time.monotonic() + 30
        while self.acked + len(self.ack_errors) < self.published:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)


async def latency_at(
    publisher: Publisher, gen: Gen, server_pid: int, seconds: float, rate: float
) -> dict[str, float]:
    """A latency window: publish at a fixed ``rate`` for ``seconds``; every receipt's
    publish-to-receive time, and what the server and the load generator spent meanwhile."""
    await gen.start_latency()
    start = stat_point(server_pid, gen)
    await publisher.at_rate(seconds, rate)
    await publisher.drain()
    end = stat_point(server_pid, gen)
    lat = sorted(await gen.stop_latency())
    at_rate = window_stats(start, end)
    return {
        "lat_rate": rate,
        "lat_samples": len(lat),
        "p50_ms": percentile(lat, 0.50) / 1e6,
        "p99_ms": percentile(lat, 0.99) / 1e6,
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        "us_per_delivery_at_rate": at_rate["us_per_delivery"],
        "us_kernel_per_delivery_at_rate": at_rate["us_kernel_per_delivery"],
        "server_cpu_pct_at_rate": at_rate["server_cpu_pct"],
        "loadgen_cpu_pct_at_rate": at_rate["loadgen_cpu_pct"],
        "steal_server_at_rate": at_rate["steal_ms_per_s_server_core"],
        "steal_loadgen_at_rate": at_rate["steal_ms_per_s_loadgen_core"],
    }


async def fanout(job: dict[str, Any]) -> dict[str, Any]:
    """S subscribers and one publisher on one topic: per run, a saturated window (closed
    loop) then a latency window at ``lat_fraction`` of the saturated rate. With
    ``fanrecv`` (the default of ``python -m bench``) the subscribers are read in C."""
    gen = RemoteGen(job["fanrecv"]) if job.get("fanrecv") else Gen()
    dialect = DIALECTS[job["dialect"]]
    tokens: list[str] = job["tokens"]
    subscribers = int(job["subscribers"])
    topic = job["topic"]
    server_pid = int(job["server_pid"])
    base_url = job["url"]

    t0 = time.monotonic()
    urls = [dialect.url(base_url, tokens[i]) for i in range(subscribers)]
    subs = await connect_all(
        urls,
        lambda i: Client(gen, dialect),
        job.get("concurrency", 100),
    )
    await asyncio.gather(*(s.request_subscribe(topic) for s in subs))
    (pub_client,) = await connect_all(
        [dialect.url(base_url, job["pub_token"])], lambda i: Client(gen, dialect, False), 1
    )
    await pub_client.request_subscribe(topic)
    counted = [s for s in subs if s.counted]
    publisher = Publisher(gen, pub_client, dialect, topic, len(counted))
    if isinstance(gen, RemoteGen):
        await gen.attach(counted)  # their counts are fanrecv's until gen.finish
    else:
        publisher.subscribers = counted
    log(f"{job['label']}: {subscribers} subscribers ready in {time.monotonic() - t0:.1f} s")
    window = int(job.get("window") or max(8, 20000 // subscribers))
    try:
        runs = await _fanout_runs(job, gen, publisher, server_pid, window)
    except RuntimeError as exc:
        if isinstance(gen, RemoteGen):
            with contextlib.suppress(RuntimeError):  # fanrecv may be what failed
                await gen.finish(counted)
            raise RuntimeError(f"{exc}: {behind(counted, publisher.last_seq)}") from None
        raise
    if isinstance(gen, RemoteGen):
        await gen.finish(counted)
    check = exactly_once(counted, publisher)
    for client in [*subs, pub_client]:
        client.close()
    await asyncio.sleep(0.1)
    return {"runs": runs, "exactly_once": check, "window": window}


async def _fanout_runs(
    job: dict[str, Any], gen: Gen, publisher: Publisher, server_pid: int, window: int
) -> list[dict[str, Any]]:
    """The measured runs of a fan-out job, then the last messages settled."""
    runs: list[dict[str, Any]] = []
    profiler = profiling(job)
    for run in range(int(job["runs"])):
        await publisher.closed_loop(job["warmup"], window)
        start = stat_point(server_pid, gen)
        await publisher.closed_loop(job["duration"], window)
        end = stat_point(server_pid, gen)
        await publisher.drain()
        result = window_stats(start, end)
        result["publishes_per_s"] = result["deliveries_per_s"] / publisher.receivers
        rate = max(1.0, job["lat_fraction"] * result["publishes_per_s"])
        result.update(await latency_at(publisher, gen, server_pid, job["duration"], rate))
        ref_rates = job.get("ref_rates")
        if ref_rates:  # the same fixed rate as another server's run (see workloads.fanout)
            ref = await latency_at(
                publisher, gen, server_pid, job["duration"], ref_rates[run % len(ref_rates)]
            )
            result.update({f"ref_{key}": value for key, value in ref.items()})
        runs.append(result)
        log(
            f"{job['label']} run {run + 1}: {result['deliveries_per_s']:,.0f} deliveries/s, "
            f"{result['us_per_delivery']:.2f} us/delivery, server {result['server_cpu_pct']:.0f}%"
            f", loadgen {result['loadgen_cpu_pct']:.0f}%, p99 {result['p99_ms']:.2f} ms"
        )
    profiler.close()
    await publisher.settle()
    await asyncio.sleep(0.2)
    return runs


def exactly_once(subs: Sequence[Client], publisher: Publisher) -> dict[str, Any]:
    """Every subscriber got every acknowledged seq, in order, once."""
    first, last = publisher.first_seq, publisher.last_seq
    expected = last - first + 1 if first else 0
    bad = [
        s.summary()
        for s in subs
        if s.errors or s.first != first or s.next - 1 != last or s.count != expected
    ]
    return {
        "ok": not bad and publisher.acked == publisher.published and not publisher.ack_errors,
        "subscribers": len(subs),
        "messages": expected,
        "published": publisher.published,
        "acked": publisher.acked,
        "ack_errors": publisher.ack_errors,
        "bad": len(bad),
        "examples": bad[:3],
        "anomalies": [s.anomalies for s in subs if s.anomalies][:3],
    }


# -- durable publish ------------------------------------------------------------------------


async def durable(job: dict[str, Any]) -> dict[str, Any]:
    """P publishers over T topics, each keeping ``window`` publishes unacknowledged; counts
    ok replies (sent only after the commit) per second."""
    gen = Gen()
    dialect = DIALECTS["topichub"]
    tokens: list[str] = job["tokens"]
    topics: list[str] = job["topics"]
    server_pid = int(job["server_pid"])
    window = int(job["window"])
    clients = await connect_all(
        [dialect.url(job["url"], t) for t in tokens],
        lambda i: Client(gen, dialect, counted=False),
        job.get("concurrency", 100),
    )
    state = {"acked": 0, "errors": 0}
    last_seq: list[dict[str, int]] = [{} for _ in clients]
    seq_errors = [0]
    content = b"x" * 100

    def make(index: int, client: Client) -> None:
        topic = topics[index % len(topics)].encode()
        sent = [0]

        def send_one() -> None:
            sent[0] += 1
            client.send(dialect.publish(topic, content, sent[0]))

        def on_reply(ref: int, body: dict[str, Any]) -> None:
            if body.get("result") != "ok":
                state["errors"] += 1
                return
            state["acked"] += 1
            seq = body["seq"]
            previous = last_seq[index].get(body["topic_name"], seq - 1)
            if seq != previous + 1 and len(topics) >= len(clients):
                seq_errors[0] += 1  # one publisher per topic: its acks are consecutive
            last_seq[index][body["topic_name"]] = seq
            if running[0]:
                send_one()

        client.on_reply = on_reply
        client.on_message = lambda data, seq: None  # the echo of its own messages
        for _ in range(window):
            send_one()

    running = [True]
    for index, client in enumerate(clients):
        make(index, client)
    runs = []
    profiler = profiling(job)
    await asyncio.sleep(job["warmup"])
    for _ in range(int(job["runs"])):
        t_start, cpu_start, acked_start = time.monotonic(), cpu_seconds("self"), state["acked"]
        srv_start = cpu_seconds(server_pid)
        await asyncio.sleep(job["duration"])
        wall = time.monotonic() - t_start
        srv_end, cpu_end = cpu_seconds(server_pid), cpu_seconds("self")
        acked = state["acked"] - acked_start
        runs.append(
            {
                "publishes_per_s": acked / wall,
                "server_cpu_pct": 100 * (sum(srv_end) - sum(srv_start)) / wall,
                "loadgen_cpu_pct": 100 * (sum(cpu_end) - sum(cpu_start)) / wall,
                "us_per_publish": 1e6 * (sum(srv_end) - sum(srv_start)) / max(1, acked),
                "us_kernel_per_publish": 1e6 * (srv_end[1] - srv_start[1]) / max(1, acked),
            }
        )
        log(f"durable: {runs[-1]['publishes_per_s']:,.0f} publishes/s")
    profiler.close()
    running[0] = False
    await asyncio.sleep(0.5)
    for client in clients:
        client.close()
    return {"runs": runs, "errors": state["errors"], "seq_errors": seq_errors[0]}


async def fill(job: dict[str, Any]) -> dict[str, Any]:
    """Publish ``per_topic`` messages to each topic as fast as acknowledged (the backlog of
    the pending-replay workload)."""
    gen = Gen()
    dialect = DIALECTS["topichub"]
    topics: list[str] = job["topics"]
    per_topic = int(job["per_topic"])
    clients = await connect_all(
        [dialect.url(job["url"], t) for t in job["tokens"]],
        lambda i: Client(gen, dialect, counted=False),
        100,
    )
    done = asyncio.get_running_loop().create_future()
    remaining = [len(clients)]
    errors = [0]
    content = b"%020d" % 0 + b" " + b"p" * 79

    def make(index: int, client: Client) -> None:
        topic = topics[index].encode()
        sent = [0]
        acked = [0]

        def send_one() -> None:
            sent[0] += 1
            client.send(dialect.publish(topic, content, sent[0]))

        def on_reply(ref: int, body: dict[str, Any]) -> None:
            if body.get("result") != "ok":
                errors[0] += 1
            acked[0] += 1
            if sent[0] < per_topic:
                send_one()
            elif acked[0] == per_topic:
                remaining[0] -= 1
                if not remaining[0] and not done.done():
                    done.set_result(None)

        client.on_reply = on_reply
        client.on_message = lambda data, seq: None
        for _ in range(min(per_topic, 32)):
            send_one()

    start = time.monotonic()
    for index, client in enumerate(clients):
        make(index, client)
    await asyncio.wait_for(done, 600)
    seconds = time.monotonic() - start
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)  # the publishers' cursors are saved as they close
    return {"messages": per_topic * len(clients), "seconds": seconds, "errors": errors[0]}


# -- pending replay -------------------------------------------------------------------------


async def replay(job: dict[str, Any]) -> dict[str, Any]:
    """One user with a backlog reconnects: time to ``connected``, to the first pending
    message, and the rate of the replay; every topic's seqs must arrive once, in order.
    Read by ``bench/replayrecv.c`` when the job names it, else by picows in Python."""
    if "replayrecv" in job:
        return await replay_in_c(job)
    gen = Gen()
    dialect = DIALECTS["topichub"]
    per_topic: dict[bytes, list[int]] = {}  # topic -> [first, next, count, errors]
    marks: dict[str, float] = {}
    state = {"pending_flags": 0, "received": 0}
    expected = int(job["expected"])
    done = asyncio.get_running_loop().create_future()

    def on_message(data: bytes, seq: int) -> None:
        now = time.monotonic()
        if "first" not in marks:
            marks["first"] = now
        i = data.find(TOPIC_KEY) + 14
        topic = data[i : data.find(b'"', i)]
        entry = per_topic.get(topic)
        if entry is None:
            per_topic[topic] = [seq, seq + 1, 1, 0]
        else:
            if seq != entry[1]:
                entry[3] += 1
            entry[1] = seq + 1
            entry[2] += 1
        if PENDING_TRUE in data:
            state["pending_flags"] += 1
        state["received"] += 1
        if state["received"] >= expected and not done.done():
            marks["last"] = now
            marks["cpu_last"] = sum(cpu_seconds("self"))
            marks["srv_last"] = sum(cpu_seconds(job["server_pid"]))
            done.set_result(None)

    class Replayer(Client):
        def other(self, transport: WSTransport, data: bytes) -> None:
            if not self.ready.done() and b'"event":"connected"' in data:
                marks["connected"] = time.monotonic()
                marks["cpu_connected"] = sum(cpu_seconds("self"))
                marks["srv_connected"] = sum(cpu_seconds(job["server_pid"]))
            super().other(transport, data)

    profiler = profiling(job)
    marks["connect"] = time.monotonic()
    client = Replayer(gen, dialect, counted=False)
    client.on_message = on_message
    await ws_connect(lambda: client, dialect.url(job["url"], job["token"]), max_frame_size=2**24)
    await client.ready
    pending = int(client.hello.get("pending", -1))
    await asyncio.wait_for(done, 120)
    profiler.close()
    await asyncio.sleep(0.2)  # nothing more should come
    client.close()
    per_topic_ok = all(
        e[0] == 1 and e[1] - 1 == job["per_topic"] and e[2] == job["per_topic"] and not e[3]
        for e in per_topic.values()
    )
    span = marks["last"] - marks["connected"]
    return {
        "pending_announced": pending,
        "received": state["received"],
        "pending_flags": state["pending_flags"],
        "topics": len(per_topic),
        "exactly_once": per_topic_ok
        and len(per_topic) == job["topics"]
        and state["received"] == expected == pending,
        "connect_ms": 1e3 * (marks["connected"] - marks["connect"]),
        "first_ms": 1e3 * (marks["first"] - marks["connected"]),
        "seconds": span,
        "messages_per_s": state["received"] / span if span > 0 else float("nan"),
        "loadgen_cpu_pct": 100 * (marks["cpu_last"] - marks["cpu_connected"]) / span,
        "server_cpu_pct": 100 * (marks["srv_last"] - marks["srv_connected"]) / span,
    }


async def replay_in_c(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`replay`, read by ``bench/replayrecv.c`` (it connects, reads and checks; this
    turns what it printed into the same figures)."""
    url = urlsplit(job["url"])
    profiler = profiling(job)
    proc = await asyncio.create_subprocess_exec(
        job["replayrecv"],
        url.hostname or "127.0.0.1",
        str(url.port),
        f"/{job['token']}",
        str(job["expected"]),
        str(job["server_pid"]),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()  # a replay that never finished: fail, and leave no reader behind
        raise
    profiler.close()
    if proc.returncode != 0:
        raise RuntimeError(f"replayrecv failed with exit status {proc.returncode}")
    got = json.loads(out)
    expected = int(job["expected"])
    per_topic_ok = all(
        first == 1 and last == job["per_topic"] and count == job["per_topic"] and not errors
        for _, first, last, count, errors in got["topics"]
    )
    # A replay that ended short (closed, or no `connected`) has no span: no figures, and
    # exactly_once says why the run failed.
    nan = float("nan")
    complete = bool(got["connected_ns"] and got["first_ns"] and got["last_ns"])
    span = (got["last_ns"] - got["connected_ns"]) / 1e9 if complete else nan
    srv_cpu = got["srv_last"] - got["srv_connected"]
    return {
        "pending_announced": got["pending_announced"],
        "received": got["received"],
        "pending_flags": got["pending_flags"],
        "topics": len(got["topics"]),
        "exactly_once": complete
        and per_topic_ok
        and len(got["topics"]) == job["topics"]
        and got["received"] == expected == got["pending_announced"]
        and got["pending_flags"] == expected
        and got["extra"] == got["other_events"] == got["close_code"] == 0,
        "connect_ms": (got["connected_ns"] - got["connect_ns"]) / 1e6 if complete else nan,
        "first_ms": (got["first_ns"] - got["connected_ns"]) / 1e6 if complete else nan,
        "seconds": span,
        "messages_per_s": got["received"] / span if span > 0 else nan,
        "loadgen_cpu_pct": 100 * (got["cpu_last"] - got["cpu_connected"]) / span
        if span > 0
        else nan,
        "server_cpu_pct": 100 * srv_cpu / span if span > 0 else nan,
        "us_per_message": 1e6 * srv_cpu / expected if complete else nan,
        "us_kernel_per_message": 1e6 * (got["srv_sys_last"] - got["srv_sys_connected"]) / expected
        if complete
        else nan,
    }


# -- idle connections -----------------------------------------------------------------------


async def connections(job: dict[str, Any]) -> dict[str, Any]:
    """Open N authenticated connections; server RSS per connection and time to accept.
    Opened by ``bench/connopen.c`` when the job names it, else by picows in Python."""
    if "connopen" in job:
        return await connections_in_c(job)
    gen = Gen()
    dialect = DIALECTS["topichub"]
    tokens: list[str] = job["tokens"]
    server_pid = int(job["server_pid"])
    count = int(job["connections"])
    before = memory_kib(server_pid)
    profiler = profiling(job)
    start = time.monotonic()
    server_start, own_start = cpu_seconds(server_pid), cpu_seconds("self")
    clients = await connect_all(
        [dialect.url(job["url"], tokens[i % len(tokens)]) for i in range(count)],
        lambda i: Client(gen, dialect, counted=False),
        job.get("concurrency", 100),
        job.get("source_ips", 1),
    )
    seconds = time.monotonic() - start
    server_end, own_end = cpu_seconds(server_pid), cpu_seconds("self")
    profiler.close()
    await asyncio.sleep(job.get("settle", 2.0))
    after = memory_kib(server_pid)
    alive = sum(1 for c in clients if not c.gone.done())
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    return {
        "connections": count,
        "alive": alive,
        "seconds": seconds,
        "server_user_s": server_end[0] - server_start[0],
        "server_system_s": server_end[1] - server_start[1],
        "loadgen_cpu_s": sum(own_end) - sum(own_start),
        "rss_before_kib": before["VmRSS"],
        "rss_after_kib": after["VmRSS"],
        "kib_per_connection": (after["VmRSS"] - before["VmRSS"]) / count,
        "loadgen_rss_kib": rss_kib("self"),
    }


async def connections_in_c(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`connections`, opened and held by ``bench/connopen.c``."""
    url = urlsplit(job["url"])
    tokens: list[str] = job["tokens"]
    server_pid = int(job["server_pid"])
    count = int(job["connections"])
    with tempfile.NamedTemporaryFile("w", suffix=".targets") as targets:
        targets.writelines(f"/{tokens[i % len(tokens)]}\n" for i in range(count))
        targets.flush()
        before = memory_kib(server_pid)
        profiler = profiling(job)
        proc = await asyncio.create_subprocess_exec(
            job["connopen"],
            url.hostname or "127.0.0.1",
            str(url.port),
            targets.name,
            str(job.get("concurrency", 100)),
            str(job.get("source_ips", 1)),
            str(server_pid),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            opened = json.loads(await asyncio.wait_for(proc.stdout.readline(), 300))
            profiler.close()
            await asyncio.sleep(job.get("settle", 2.0))
            after = memory_kib(server_pid)
            proc.stdin.write(b"alive\n")
            await proc.stdin.drain()
            held = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30)
        except (TimeoutError, json.JSONDecodeError):
            proc.kill()  # it stopped (its stderr says why) or never finished: fail
            await proc.wait()
            raise RuntimeError(f"connopen failed with exit status {proc.returncode}") from None
    await asyncio.sleep(0.5)
    return {
        "connections": count,
        "alive": held["alive"] if held["events"] == 0 else -1,  # nothing else may come
        "seconds": (opened["done_ns"] - opened["start_ns"]) / 1e9,
        "server_user_s": opened["srv_user_done"] - opened["srv_user_start"],
        "server_system_s": opened["srv_sys_done"] - opened["srv_sys_start"],
        "loadgen_cpu_s": opened["cpu_done"] - opened["cpu_start"],
        "retries": opened["retries"],
        "rss_before_kib": before["VmRSS"],
        "rss_after_kib": after["VmRSS"],
        "kib_per_connection": (after["VmRSS"] - before["VmRSS"]) / count,
        "loadgen_rss_kib": rss_kib("self"),
    }


# -- slow consumer --------------------------------------------------------------------------


async def metric(api_url: str, name: str) -> float:
    """One counter from topichub's Prometheus /metrics (raw HTTP/1.0 GET, no client lib)."""
    host, port = api_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    body = (await reader.read()).decode()
    writer.close()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def slow(job: dict[str, Any]) -> dict[str, Any]:
    """S subscribers, one of which (the last) stops reading. Per run:

    1. all reading: a saturated window, then a latency window at 20 % of saturation;
    2. episode A: the slow one stops reading; a saturated window runs from that moment
       until the server has closed it (1013), it has reconnected and caught up through
       its pending replay (at least ``duration``): the others' deliveries/s over all of it;
    3. episode B: the reconnected one stops reading again; a latency window at the same
       fixed rate as in 1 (the others' p99 while a consumer is stalled), then publishing
       goes on unmeasured until the server closes it and it has reconnected.

    The slow user's connections together must get every seq exactly once. With
    ``fanrecv`` the others are read in C (as in the fan-out); the slow user's connections
    stay picows clients, which can stop reading.
    """
    gen = RemoteGen(job["fanrecv"]) if job.get("fanrecv") else Gen()
    dialect = DIALECTS["topichub"]
    tokens: list[str] = job["tokens"]
    subscribers = int(job["subscribers"])
    topic = job["topic"]
    server_pid = int(job["server_pid"])
    slow_index = subscribers - 1
    subs = await connect_all(
        [dialect.url(job["url"], tokens[i]) for i in range(subscribers)],
        lambda i: Client(gen, dialect, counted=i != slow_index),
        100,
        tiny_socket=lambda i: i == slow_index,
    )
    await asyncio.gather(*(s.request_subscribe(topic) for s in subs))
    (pub_client,) = await connect_all(
        [dialect.url(job["url"], job["pub_token"])], lambda i: Client(gen, dialect, False), 1
    )
    await pub_client.request_subscribe(topic)
    counted = [s for s in subs if s.counted]
    publisher = Publisher(gen, pub_client, dialect, topic, len(counted))
    if isinstance(gen, RemoteGen):
        await gen.attach(counted)
    else:
        publisher.subscribers = counted
    window = int(job.get("window") or max(8, 20000 // subscribers))
    episode_limit = float(job.get("detect_timeout", 90))
    peak = {"rss": 0}
    sampling = [True]
    chain = [subs[slow_index]]  # the slow user's connections, one per reconnect
    outcomes: list[dict[str, Any]] = []
    closes = MetricPoller(job["api_url"], "topichub_slow_consumers_closed_total")
    await closes.start()

    async def sample_rss() -> None:
        while sampling[0]:
            peak["rss"] = max(peak["rss"], rss_kib(server_pid))
            await asyncio.sleep(0.02)

    async def latency_window(rate: float) -> dict[str, float]:
        window = await latency_at(publisher, gen, server_pid, job["duration"], rate)
        return {"p50_ms": window["p50_ms"], "p99_ms": window["p99_ms"]}

    async def stall() -> asyncio.Task[dict[str, Any]]:
        """The slow user stops reading; returns the watcher.

        It first reconnects (a clean close: nothing is replayed): on a socket that has been
        busy the kernel has grown the server's send buffer (autotuning, up to tcp_wmem's
        maximum, 4 MiB here) and it would absorb minutes of this load before topichub's
        own outbound buffer starts to fill. A fresh socket stalls within seconds.
        """
        old = chain[-1]
        old.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(old.gone), 10)
        (client,) = await connect_all(
            [dialect.url(job["url"], tokens[slow_index])],
            lambda i: Client(gen, dialect, counted=False),
            1,
            tiny_socket=lambda i: True,
        )
        chain.append(client)
        deadline = time.monotonic() + 30
        missed = publisher.last_seq > old.next - 1  # then they come as pending: wait
        while missed and client.next - 1 < publisher.last_seq:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        closed_before = await closes.fresh()
        client.transport.underlying_transport.pause_reading()  # type: ignore[union-attr]
        return asyncio.create_task(watch_slow(job, client, closes, closed_before, gen, dialect))

    def caught_up(watcher: asyncio.Task[dict[str, Any]]) -> bool:
        """The reconnected slow user is as current as the others (publishing goes on, and
        with pipelined publishes the acks run up to a window ahead of every reader)."""
        if not watcher.done():
            return False
        again: Client = watcher.result()["client"]
        return again.next - 1 >= gen.everyone_has(counted)

    async def finish(watcher: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
        outcome = await asyncio.wait_for(watcher, 120)
        chain.append(outcome.pop("client"))
        outcomes.append(outcome)
        return outcome

    rss_start = rss_kib(server_pid)
    sampler = asyncio.create_task(sample_rss())
    without: list[dict[str, Any]] = []
    with_slow: list[dict[str, Any]] = []
    for run in range(int(job["runs"])):
        # 1. everyone reading
        await publisher.closed_loop(job["warmup"], window)
        start = stat_point(server_pid, gen)
        await publisher.closed_loop(job["duration"], window)
        end = stat_point(server_pid, gen)
        await publisher.drain()
        base = window_stats(start, end)
        base["lat_rate"] = max(1.0, job["lat_fraction"] * base["deliveries_per_s"] / len(counted))
        base.update(await latency_window(base["lat_rate"]))
        without.append(base)
        # 2. episode A: saturated, from the stall to the reconnected client caught up
        watcher = await stall()
        start = stat_point(server_pid, gen)
        began = time.monotonic()
        while time.monotonic() - began < episode_limit and (
            time.monotonic() - began < job["duration"] or not caught_up(watcher)
        ):
            await publisher.closed_loop(0.1, window)
        end = stat_point(server_pid, gen)
        await publisher.drain()
        episode = window_stats(start, end)
        outcome = await finish(watcher)
        outcome["episode_s"] = episode["seconds"]
        # 3. episode B: the others' latency while a consumer is stalled
        watcher = await stall()
        episode.update(await latency_window(base["lat_rate"]))
        began = time.monotonic()
        while not watcher.done() and time.monotonic() - began < episode_limit:
            await publisher.closed_loop(0.1, window)
        await finish(watcher)
        with_slow.append(episode)
        log(
            f"slow run {run + 1}: all reading {base['deliveries_per_s']:,.0f}/s p99 "
            f"{base['p99_ms']:.2f} ms; one stalled {episode['deliveries_per_s']:,.0f}/s over "
            f"{episode['seconds']:.1f} s, p99 {episode['p99_ms']:.2f} ms; "
            f"close codes {[o['close_code'] for o in outcomes[-2:]]}"
        )
    slow_client = chain[-1]
    await publisher.settle()
    sampling[0] = False
    await sampler
    await closes.stop()
    hwm = memory_kib(server_pid)["VmHWM"]
    # The slow user's connections together got every seq once: each one starts right after
    # what the one before it received, and the last one reaches the end.
    deadline = time.monotonic() + 30
    while slow_client.next - 1 < publisher.last_seq and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    links = [chain[0].first == publisher.first_seq] + [
        after.first == before.next for before, after in itertools.pairwise(chain)
    ]
    slow_once = (
        all(links)
        and not any(c.errors for c in chain)
        and slow_client.next - 1 == publisher.last_seq
    )
    if isinstance(gen, RemoteGen):
        await gen.finish(counted)
    check = exactly_once(counted, publisher)
    for client in [*subs, pub_client, slow_client]:
        client.close()
    return {
        "without": without,
        "with": with_slow,
        "slow": outcomes,
        "slow_exactly_once": slow_once,
        "slow_chain": [c.summary() for c in chain],
        "exactly_once": check,
        "rss_start_kib": rss_start,
        "rss_peak_kib": peak["rss"],
        "vm_hwm_kib": hwm,
    }


class MetricPoller:
    """Reads one counter of topichub's /metrics every ``interval`` s through the whole
    slow-consumer run, stalled or not: a request costs the server ~1.5 ms of its core
    (session 10's machine), so polling only while a consumer is stalled would load the
    windows being compared unequally (every 50 ms, as before session 10, that was 3 % of the
    core, in a latency window already near the core's saturation)."""

    def __init__(self, api_url: str, name: str, interval: float = 0.2) -> None:
        self.api_url, self.name, self.interval = api_url, name, interval
        self.value = 0.0
        self.read_at = 0.0  # time.monotonic() of the last reading
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._read()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def fresh(self) -> float:
        """The value read after this call."""
        asked = time.monotonic()
        while self.read_at <= asked:  # noqa: ASYNC110
            await asyncio.sleep(self.interval / 4)
        return self.value

    async def _read(self) -> None:
        self.value = await metric(self.api_url, self.name)
        self.read_at = time.monotonic()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._read()


async def watch_slow(
    job: dict[str, Any],
    client: Client,
    closes: MetricPoller,
    closed_before: float,
    gen: Gen,
    dialect: Dialect,
) -> dict[str, Any]:
    """Wait until the server gives up on the stalled client, read what it had been sent
    up to the close frame, then reconnect as the same user (the rest comes as pending,
    then live)."""
    stalled = time.monotonic()
    detected = None
    give_up = stalled + job.get("detect_timeout", 90) + 2 * job["duration"]
    while time.monotonic() < give_up:
        if closes.value > closed_before:
            detected = closes.read_at - stalled
            break
        await asyncio.sleep(closes.interval / 4)
    client.transport.underlying_transport.resume_reading()  # type: ignore[union-attr]
    try:
        await asyncio.wait_for(asyncio.shield(client.gone), 30)
    except TimeoutError:
        client.close()
    token = job["tokens"][int(job["subscribers"]) - 1]
    # Back as an ordinary reader (a normal socket, like the others'): it must catch up
    # through its pending replay and then keep up.
    (again,) = await connect_all(
        [dialect.url(job["url"], token)],
        lambda i: Client(gen, dialect, counted=False),
        1,
    )
    return {
        "client": again,
        "detected_after_s": detected,
        "close_code": client.close_code,
        "received_before_close": client.count,
        "pending_on_reconnect": again.hello.get("pending", 0),
    }


JOBS = {
    "fanout": fanout,
    "durable": durable,
    "fill": fill,
    "replay": replay,
    "connections": connections,
    "slow": slow,
}


def main() -> None:
    raise_nofile()
    job = json.load(sys.stdin)
    if "token_file" in job:
        with open(job["token_file"]) as f:
            job.update(json.load(f))
    coroutine = JOBS[job["kind"]](job)
    try:
        import uvloop

        result = uvloop.run(coroutine)
        result["loop"] = "uvloop"
    except ImportError:
        result = asyncio.run(coroutine)
        result["loop"] = "asyncio"
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
