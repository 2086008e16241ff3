"""Shared fixtures: a real topichub process, REST helpers and WebSocket clients.

Every e2e test talks to a real ``topichub serve`` over real sockets. Names are made unique
per test so tests can share one server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.backends import create_postgres_database, drop_postgres_database, redis_channel_url
from topichub.testing import ServerProcess, WsClient

ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-123"


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Account:
    username: str
    token: str
    password: str = PASSWORD


class Harness:
    """One running server plus helpers to make accounts and clients against it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.api_url, timeout=30)
        self.admin = self.login("admin", ADMIN_PASSWORD)

    def refresh(self) -> None:
        """Point at the server's current ports (after a restart)."""
        self.http.close()
        self.http = httpx.Client(base_url=self.server.api_url, timeout=30)

    def login(self, username: str, password: str = PASSWORD) -> Account:
        r = self.http.post("/api/v1/token", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return Account(username, r.json()["access_token"], password)

    def account(self, prefix: str = "u") -> Account:
        username = unique(prefix)
        r = self.http.post("/api/v1/users", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201, r.text
        return self.login(username)

    def auth(self, account: Account) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.token}"}

    def topic(self, owner: Account, *, private: bool = False, prefix: str = "t") -> str:
        name = unique(prefix)
        r = self.http.post(
            "/api/v1/topics",
            json={"topic_name": name, "is_private": private},
            headers=self.auth(owner),
        )
        assert r.status_code == 201, r.text
        return name

    async def connect(self, account: Account, query: str = "") -> WsClient:
        client = await WsClient.connect(f"{self.server.ws_url}/{account.token}{query}")
        hello = await client.recv()
        assert hello["event"] == "connected", hello
        client.hello = hello  # type: ignore[attr-defined]
        return client


# Which backends the e2e suite runs on: sqlite = SQLite + in-process broker,
# postgres = PostgreSQL + Redis (each server gets a fresh database and channel).
BACKENDS = os.environ.get("TOPICHUB_TEST_BACKENDS", "sqlite,postgres").split(",")


class Backend:
    """Command-line arguments putting a server on one backend, and their cleanup."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.database_url = ""
        self.broker_url = ""
        if name == "postgres":
            self.database_url = create_postgres_database()
            self.broker_url = redis_channel_url()

    @property
    def args(self) -> list[str]:
        if self.name == "sqlite":
            return []
        return ["--database", self.database_url, "--broker", self.broker_url]

    def drop(self) -> None:
        if self.database_url:
            drop_postgres_database(self.database_url)


@pytest.fixture(scope="session", params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(backend_name: str) -> Iterator[Backend]:
    """A fresh space on the session's backend, for tests that run servers of their own:
    ``start_server(tmp_path, *backend.args)``."""
    fresh = Backend(backend_name)
    yield fresh
    fresh.drop()


def start_server(data_dir: Path, *args: str) -> ServerProcess:
    server = ServerProcess(data_dir, *args)
    result = server.cli("user", "add", "admin", "--admin", "--password", ADMIN_PASSWORD)
    assert result.returncode == 0 or "already taken" in result.stderr, result.stderr
    return server.start()


@pytest.fixture(scope="session")
def server(backend_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    space = Backend(backend_name)
    proc = start_server(tmp_path_factory.mktemp(f"node-{backend_name}"), *space.args)
    yield proc
    proc.stop()
    space.drop()


@pytest.fixture(scope="session")
def hub(server: ServerProcess) -> Iterator[Harness]:
    harness = Harness(server)
    yield harness
    harness.http.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[WsClient]]:
    """Close every client a test opened, even when it fails."""
    opened: list[WsClient] = []
    yield opened
    for client in opened:
        await client.close()


ConnectFn = Callable[[Account], Awaitable[WsClient]]


@pytest.fixture
def connect(hub: Harness, clients: list[WsClient]) -> Callable[..., Awaitable[WsClient]]:
    async def _connect(account: Account, query: str = "") -> WsClient:
        client = await hub.connect(account, query)
        clients.append(client)
        return client

    return _connect


def require_backends() -> bool:
    return os.environ.get("TOPICHUB_REQUIRE_BACKENDS") == "1"
