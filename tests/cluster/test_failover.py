"""Losing a node, and losing Redis, loses no acknowledged message."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.backends import redis_channel_url
from tests.cluster.conftest import Cluster
from tests.conftest import Account
from tests.proxy import ThreadedTcpProxy
from topichub.testing import WsClient

pytestmark = pytest.mark.timeout(240)


def redis_behind_proxy() -> tuple[ThreadedTcpProxy, str, str]:
    """(a proxy the test can cut, the Redis URL through it, the direct URL), both URLs on
    the same channel."""
    base = redis_channel_url()
    target = urlsplit(base)
    proxy = ThreadedTcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    proxied = base.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
    return proxy, proxied, base


class Member:
    """A member that records every message it gets, reconnecting to a surviving node
    whenever its connection drops."""

    def __init__(self, cluster: Cluster, account: Account, node: int) -> None:
        self.cluster = cluster
        self.account = account
        self.node = node
        self.received: list[int] = []  # every seq, live or pending, across connections
        self.reordered = 0
        self.connections = 0
        self.client: WsClient | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.client = await self.cluster.connect(self.account, self.node)
            except OSError:
                self.node = (self.node + 1) % len(self.cluster.nodes)
                await asyncio.sleep(0.05)
                continue
            self.connections += 1
            last = 0
            try:
                while not stop.is_set():
                    frame = await self.client.recv(seconds=60)
                    if frame.get("event") == "message":
                        seq = frame["seq"]
                        if seq <= last:
                            self.reordered += 1
                        last = seq
                        self.received.append(seq)
            except (ConnectionClosed, OSError, TimeoutError):
                # The node died under us: go to the next one.
                self.node = (self.node + 1) % len(self.cluster.nodes)


async def test_sigkill_of_a_node_loses_no_acknowledged_message(cluster: Cluster) -> None:
    publisher = cluster.account(0)
    pub = await cluster.connect(publisher, 0)
    await pub.request("create", topic_name="stream")
    members = [Member(cluster, cluster.account(i), i) for i in range(3)]
    for member in members:  # subscribe over WebSocket on each member's own node
        client = await cluster.connect(member.account, member.node)
        assert (await client.request("subscribe", topic_name="stream"))["result"] == "ok"
        await client.close()

    acked: list[int] = []
    stop = asyncio.Event()
    want: set[int] = set()
    tasks = [asyncio.create_task(m.run(stop)) for m in members]
    await asyncio.sleep(0.5)
    total, kill_at = 400, 130
    for n in range(total):
        reply = await pub.request("message", topic_name="stream", content=n, seconds=30)
        assert reply["result"] == "ok", reply
        acked.append(reply["seq"])
        if n == kill_at:
            cluster.nodes[1].kill()  # SIGKILL, mid-stream
    want.update(acked)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(want.issubset(m.received) for m in members):
        await asyncio.sleep(0.1)
    stop.set()
    for member in members:
        if member.client is not None:
            await member.client.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pub.close()

    for i, member in enumerate(members):
        counts = Counter(member.received)
        lost = len(want - set(counts))
        duplicated = sum(c - 1 for c in counts.values() if c > 1)
        print(
            f"member on node {i}: acked={len(acked)} delivered={len(member.received)} "
            f"lost={lost} duplicated={duplicated} reordered={member.reordered} "
            f"connections={member.connections}"
        )
        assert lost == 0
        assert member.reordered == 0
        if i != 1:
            assert duplicated == 0  # only the killed node's members may see a replay
    assert members[1].connections >= 2  # it really failed over


async def test_redis_outage_nodes_recover_without_restart(tmp_path: Path) -> None:
    proxy, proxied, _ = redis_behind_proxy()
    cluster = Cluster(tmp_path, 2, broker_url=proxied).start()
    pids = [node.process.pid for node in cluster.nodes]  # type: ignore[union-attr]
    try:
        alice, bob = cluster.account(0), cluster.account(1)
        a = await cluster.connect(alice, 0)
        b = await cluster.connect(bob, 1)
        await a.request("create", topic_name="news")
        assert (await b.request("subscribe", topic_name="news"))["result"] == "ok"

        async def publish(count: int) -> list[int]:
            return [
                (await a.request("message", topic_name="news", content=n))["seq"]
                for n in range(count)
            ]

        async def bob_gets(seqs: list[int]) -> None:
            for seq in seqs:
                event = await b.next_event(seconds=30)
                assert (event["event"], event["seq"], event["pending"]) == ("message", seq, False)

        async def readiness(node: int) -> tuple[int, dict]:
            async with httpx.AsyncClient(base_url=cluster.nodes[node].api_url) as http:
                r = await http.get("/readyz")
                return r.status_code, r.json()

        await bob_gets(await publish(5))

        proxy.cut()
        for node in (0, 1):  # /readyz reports the outage while it lasts
            for _ in range(100):
                status, body = await readiness(node)
                if status == 503:
                    break
                await asyncio.sleep(0.1)
            assert status == 503 and body["checks"]["broker"].startswith("unavailable"), body
            assert body["checks"]["store"] == "ok"

        during = await publish(20)  # acknowledged: they are in the store
        assert during == list(range(6, 26))
        proxy.restore()
        await bob_gets(during)  # caught up live, in order, without a reconnect
        for node in (0, 1):
            for _ in range(100):
                status, body = await readiness(node)
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert status == 200, body
        await bob_gets(await publish(5))
        assert not b.inbox

        async with httpx.AsyncClient(base_url=cluster.nodes[1].api_url) as http:
            metrics = (await http.get("/metrics")).text
        reconnects = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("topichub_broker_reconnects_total")
        )
        assert reconnects >= 1
        assert [node.process.pid for node in cluster.nodes] == pids  # type: ignore[union-attr]
        assert all(node.process.poll() is None for node in cluster.nodes)  # type: ignore[union-attr]
        await a.close()
        await b.close()
    finally:
        cluster.stop()
        proxy.close()


async def test_first_direct_messages_arriving_out_of_order_are_all_delivered(
    tmp_path: Path,
) -> None:
    """A direct conversation has no join event, so a node starts following it at the
    first event it sees. If that event is not the conversation's first message (another
    node's event is late), the earlier ones must still reach this node's connections, in
    order, not be taken as already sent.

    Node 0 reaches Redis through a proxy that the test cuts, so its event for seq 1 is
    held back in its outbox while seq 2 from node 1 reaches node 2 first."""
    proxy, proxied, base = redis_behind_proxy()
    cluster = Cluster(tmp_path, 3, broker_urls=[proxied, base, base]).start()
    try:
        alice, bob = cluster.account(0), cluster.account(1)
        a = await cluster.connect(alice, 0)
        b = await cluster.connect(bob, 1)
        watcher = await cluster.connect(bob, 2)  # connected before the conversation exists

        proxy.cut()
        first = await a.request("message", topic_name=bob.username, content="one")
        assert (first["result"], first["seq"]) == ("ok", 1)
        second = await b.request("message", topic_name=alice.username, content="two")
        assert (second["result"], second["seq"]) == ("ok", 2)

        got = [await watcher.next_event(seconds=10) for _ in range(2)]
        assert [(e["event"], e["seq"], e["content"]) for e in got] == [
            ("message", 1, "one"),
            ("message", 2, "two"),
        ]
        proxy.restore()
        # Node 0's late event for seq 1 changes nothing: no duplicate follows.
        third = await a.request("message", topic_name=bob.username, content="three", seconds=30)
        assert third["seq"] == 3
        event = await watcher.next_event(seconds=30)
        assert (event["seq"], event["content"]) == (3, "three")
    finally:
        cluster.stop()
        proxy.close()


async def test_a_join_arriving_after_later_messages_still_gets_them(tmp_path: Path) -> None:
    """A user joins a topic on node 0 while node 0 cannot reach Redis, so the join event
    reaches node 2 only after messages published after the join, which node 2 already
    fanned out to its other subscriber. The user's connection on node 2 must still get
    them, in order, once the join arrives (they are the user's from the join on)."""
    proxy, proxied, base = redis_behind_proxy()
    cluster = Cluster(tmp_path, 3, broker_urls=[proxied, base, base]).start()
    try:
        owner, carol, bob = cluster.account(1), cluster.account(2), cluster.account(0)
        publisher = await cluster.connect(owner, 1)
        await publisher.request("create", topic_name="news")
        c = await cluster.connect(carol, 2)
        assert (await c.request("subscribe", topic_name="news"))["result"] == "ok"
        assert (await publisher.request("message", topic_name="news", content=0))["seq"] == 1
        assert (await c.next_event(seconds=10))["seq"] == 1  # node 2 follows the topic

        joiner = await cluster.connect(bob, 0)
        watcher = await cluster.connect(bob, 2)  # bob's other connection, on node 2
        proxy.cut()
        assert (await joiner.request("subscribe", topic_name="news"))["result"] == "ok"
        for n in (1, 2):  # after the join: bob's, but node 2 does not know he joined
            assert (await publisher.request("message", topic_name="news", content=n))["seq"] == (
                n + 1
            )
        assert [(await c.next_event(seconds=10))["seq"] for _ in range(2)] == [2, 3]
        proxy.restore()  # node 0 sends the join event now

        got = [await watcher.next_event(seconds=30) for _ in range(2)]
        assert [(e["event"], e["seq"], e["content"]) for e in got] == [
            ("message", 2, 1),
            ("message", 3, 2),
        ]
        assert (await publisher.request("message", topic_name="news", content=3))["seq"] == 4
        assert (await watcher.next_event(seconds=10))["seq"] == 4
        assert (await c.next_event(seconds=10))["seq"] == 4  # carol: no repeat of 2 and 3
        # Node 2 fanned 2 and 3 out twice (the second time only to bob), yet counts four
        # messages published.
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"{cluster.nodes[2].api_url}/metrics")).text
        assert re.search(r"^topichub_messages_published_total 4\.0$", metrics, re.M), metrics
    finally:
        cluster.stop()
        proxy.close()
