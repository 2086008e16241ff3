"""A test cluster: several ``topichub serve`` processes sharing one PostgreSQL database and
one Redis channel (DESIGN.md, "Scale-out")."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends import create_postgres_database, drop_postgres_database, redis_channel_url
from tests.conftest import ADMIN_PASSWORD, PASSWORD, Account, unique
from topichub.testing import ServerProcess, WsClient

SECRET = "cluster-test-secret-shared-by-every-node"


class Cluster:
    def __init__(
        self,
        root: Path,
        size: int,
        broker_url: str | None = None,
        *,
        broker_urls: list[str] | None = None,
    ) -> None:
        """``broker_urls`` gives each node its own way to the same Redis channel (a test
        puts one node behind a proxy it can cut)."""
        self.database_url = create_postgres_database()
        self.broker_url = broker_url or redis_channel_url()
        urls = broker_urls or [self.broker_url] * size
        self.nodes = [
            ServerProcess(
                root / f"node{i}",
                "--database",
                self.database_url,
                "--broker",
                urls[i],
                env={"TOPICHUB_SECRET": SECRET},
            )
            for i in range(size)
        ]

    def start(self) -> Cluster:
        first = self.nodes[0]
        result = first.cli("user", "add", "admin", "--admin", "--password", ADMIN_PASSWORD)
        assert result.returncode == 0, result.stderr
        # All at once: they race to migrate (the database is already at head here, the
        # store suite covers the empty case) and to subscribe to Redis.
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(), self.nodes))
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()  # a node a test killed is simply reaped
        drop_postgres_database(self.database_url)

    def account(self, node: int = 0) -> Account:
        base = self.nodes[node].api_url
        name = unique("u")
        with httpx.Client(base_url=base, timeout=30) as http:
            r = http.post("/api/v1/users", json={"username": name, "password": PASSWORD})
            assert r.status_code == 201, r.text
            r = http.post("/api/v1/token", json={"username": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
        return Account(name, r.json()["access_token"])

    async def connect(self, account: Account, node: int, query: str = "") -> WsClient:
        client = await WsClient.connect(f"{self.nodes[node].ws_url}/{account.token}{query}")
        hello = await client.recv()
        assert hello["event"] == "connected", hello
        client.hello = hello  # type: ignore[attr-defined]
        return client


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, 3).start()
    yield running
    running.stop()
