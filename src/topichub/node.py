"""The composition root: the only place that picks concrete backends and wires one node.

``Node.start`` brings up, in order: the store (migrations included), the broker, the hub,
the WebSocket gateway, then the REST API; ``Node.stop`` takes them down in reverse after a
graceful drain (DESIGN.md, "SIGTERM drains").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import uvicorn

from topichub import __version__
from topichub.api.app import create_app
from topichub.api.deps import ApiContext
from topichub.auth import TokenSigner, load_or_create_secret
from topichub.broker.base import Broker, BrokerEvent, open_broker
from topichub.config import Settings
from topichub.gateway.hub import Hub
from topichub.gateway.server import Gateway
from topichub.models import NodeInfo
from topichub.observability import Metrics
from topichub.services import Services
from topichub.services.admin import HEARTBEAT_SECONDS, NODE_FORGET_SECONDS
from topichub.store.base import Store, open_store
from topichub.store.sql import now_ms

log = logging.getLogger(__name__)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        secret = load_or_create_secret(settings.data_dir, settings.secret)
        self.signer = TokenSigner(secret, settings.token_ttl)
        self.store: Store = open_store(settings.resolved_database_url())
        self.broker: Broker = open_broker(settings.broker_url)
        self.hub = Hub(self.metrics, self.store)
        self.metrics.watch_broker(self.broker.stats)
        # Names this process in the nodes table (the admin view): host and process id.
        self.node_id = f"{socket.gethostname()}-{os.getpid()}"
        self.started_ms = now_ms()
        self.services = Services.build(
            settings,
            self.store,
            self.broker,
            self.signer,
            metrics=self.metrics,
            node_id=self.node_id,
        )
        self.gateway = Gateway(settings, self.services, self.store, self.hub, self.metrics)
        self._api: _ApiServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.start()
        await self.broker.start(self._on_event, self._on_resync)
        await self.gateway.start()
        app = create_app(
            ApiContext(
                services=self.services,
                metrics=self.metrics,
                token_ttl=self.settings.token_ttl,
                is_live=lambda: self.gateway.accepting,
                readiness=self.readiness,
                ws_port=self.ws_port,
            )
        )
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.api_port,
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        if self.settings.retention_messages or self.settings.retention_seconds:
            self._retention = asyncio.create_task(self._retention_loop(), name="retention")
        self._api = _ApiServer(config)
        self._api_task = asyncio.create_task(self._api.serve(), name="rest-api")
        while not self._api.started:
            if self._api_task.done():
                self._api_task.result()  # raises the startup error (e.g. port in use)
                raise RuntimeError("the REST API stopped during startup")
            await asyncio.sleep(0.01)
        await self._beat()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")

    @property
    def api_port(self) -> int:
        assert self._api is not None
        return int(self._api.servers[0].sockets[0].getsockname()[1])

    @property
    def ws_port(self) -> int:
        return self.gateway.port

    async def _retention_loop(self) -> None:
        """Trim every topic's log by count and age (DESIGN.md, "Retention")."""
        keep_last, max_age = self.settings.retention_messages, self.settings.retention_seconds
        interval = min(30.0, max_age / 2) if max_age else 30.0
        while True:
            try:
                older_than = now_ms() - max_age * 1000 if max_age else None
                removed = await self.store.trim(keep_last=keep_last, older_than_ms=older_than)
                if removed:
                    log.info("retention removed %d messages", removed)
            except Exception:
                self.metrics.store_errors.inc()
                log.exception("retention failed; will retry")
            await asyncio.sleep(interval)

    async def _beat(self) -> None:
        """Write this node's row of the nodes table (admin view); failures only log."""
        conns = [conn for conn in self.hub.connections() if conn.open]
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        node = NodeInfo(
            node_id=self.node_id,
            ws_address=f"{host}:{self.ws_port}",
            api_address=f"{host}:{self.api_port}",
            version=__version__,
            started_at_ms=self.started_ms,
            seen_at_ms=now_ms(),
            connections=len(conns),
            users=len({conn.username for conn in conns}),
        )
        try:
            await self.store.heartbeat(
                node, forget_before_ms=node.seen_at_ms - int(NODE_FORGET_SECONDS * 1000)
            )
        except Exception:
            self.metrics.store_errors.inc()
            log.warning("could not write the node heartbeat; will retry", exc_info=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self._beat()

    def _on_event(self, event: BrokerEvent) -> None:
        """Every event of every node: first what the services remember, then delivery."""
        self.services.topics.lookups.apply(event)
        self.hub.handle(event)

    def _on_resync(self) -> None:
        self.services.topics.lookups.clear()
        self.hub.resync()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        for name, probe in (("store", self.store.ping), ("broker", self.broker.ping)):
            try:
                await asyncio.wait_for(probe(), timeout=2)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"unavailable: {exc}"
        return checks

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            try:
                await self.store.remove_node(self.node_id)
            except Exception:
                log.warning("could not remove this node from the nodes table", exc_info=True)
        await self.gateway.stop()
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            await self._api_task
        await self.broker.close()
        await self.store.close()
