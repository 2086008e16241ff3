"""The admin view's connections per node: each node's heartbeat row in the shared database,
read by ``GET /api/v1/admin/stats`` on any node."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import Cluster
from tests.conftest import ADMIN_PASSWORD
from topichub.testing import timeout

pytestmark = pytest.mark.timeout(180)


async def test_admin_stats_list_every_node_and_its_connections(cluster: Cluster) -> None:
    ask = cluster.nodes[1]
    async with httpx.AsyncClient(base_url=ask.api_url, timeout=30) as http:
        r = await http.post("/api/v1/token", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}

        async def by_port() -> dict[int, dict[str, Any]]:
            r = await http.get("/api/v1/admin/stats", headers=admin)
            assert r.status_code == 200, r.text
            return {int(n["ws_address"].rsplit(":", 1)[1]): n for n in r.json()["nodes"]}

        async def wait_for(expected: dict[int, tuple[int, int]]) -> dict[int, dict[str, Any]]:
            """Until the listed nodes and their (connections, users) are ``expected``
            (heartbeats come every 5 s)."""
            deadline = time.monotonic() + timeout(30)
            while True:
                nodes = await by_port()
                seen = {port: (n["connections"], n["users"]) for port, n in nodes.items()}
                if seen == expected or time.monotonic() > deadline:
                    assert seen == expected
                    return nodes
                await asyncio.sleep(0.5)

        ports = [node.ws_port for node in cluster.nodes]
        nodes = await wait_for({port: (0, 0) for port in ports})
        assert len({n["node_id"] for n in nodes.values()}) == 3

        alice, bob = cluster.account(0), cluster.account(2)
        clients = [
            await cluster.connect(alice, 0),
            await cluster.connect(bob, 2),
            await cluster.connect(bob, 2),  # bob twice on node 2: 2 connections, 1 user
        ]
        try:
            await wait_for({ports[0]: (1, 1), ports[1]: (0, 0), ports[2]: (2, 1)})
            r = await http.get("/api/v1/admin/stats", headers=admin)
            assert r.json()["connections"] == 3
        finally:
            for client in clients:
                await client.close()

        # A node that stops gracefully leaves the list at once.
        assert cluster.nodes[2].stop() == 0
        await wait_for({ports[0]: (0, 0), ports[1]: (0, 0)})
