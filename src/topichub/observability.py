"""Prometheus metrics of one node (served at ``/metrics``) and logging setup."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

RECENT_ERRORS = 50


@dataclass(frozen=True, slots=True)
class ErrorNote:
    """One error a client was answered with (or a refused handshake), for the admin view."""

    at_ms: int
    code: str
    message: str
    source: str  # "ws <action>", "rest <METHOD> <path>", "ws handshake"


class Metrics:
    def __init__(self) -> None:
        # The newest errors of this node, newest last (GET /api/v1/admin/stats).
        self.recent_errors: deque[ErrorNote] = deque(maxlen=RECENT_ERRORS)
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "topichub_connections", "Open WebSocket connections", registry=self.registry
        )
        self.connections_total = Counter(
            "topichub_connections_accepted",
            "WebSocket connections accepted",
            registry=self.registry,
        )
        self.handshake_refused = Counter(
            "topichub_handshakes_refused",
            "WebSocket handshakes refused (401)",
            registry=self.registry,
        )
        # Counted on every fan-out, the hottest path there is: plain integers read at
        # scrape time (a prometheus Counter takes a lock on every inc).
        self.fan_out = FanOutCounts()
        self.registry.register(_FanOutCollector(self.fan_out))
        self.replayed = Counter(
            "topichub_pending_replayed",
            "Pending message events replayed on connect",
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "topichub_slow_consumers_closed",
            "Connections closed with 1013",
            registry=self.registry,
        )
        self.errors = Counter(
            "topichub_errors",
            "Errors answered to clients, by code",
            ["code"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "topichub_store_errors", "Unexpected store failures", registry=self.registry
        )

    def watch_broker(self, stats: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_BrokerCollector(stats))

    def error(self, code: str, message: str, source: str, *, count: bool = True) -> None:
        """Note an error answered to a client: counted in ``topichub_errors`` (unless
        ``count`` is False: refused handshakes have a counter of their own) and kept among
        the recent errors."""
        if count:
            self.errors.labels(code).inc()
        self.recent_errors.append(ErrorNote(time.time_ns() // 1_000_000, code, message, source))

    def snapshot(self) -> tuple[dict[str, float], dict[str, float]]:
        """What ``/metrics`` shows now: every sample by name (without the ``topichub_``
        prefix), and ``topichub_errors`` by code."""
        values: dict[str, float] = {}
        errors: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                if family.name == "topichub_errors":
                    errors[sample.labels.get("code", "")] = sample.value
                else:
                    values[sample.name.removeprefix("topichub_")] = sample.value
        return values, errors


class FanOutCounts:
    __slots__ = ("deliveries", "published")

    def __init__(self) -> None:
        self.published = 0  # messages fanned out by this node
        self.deliveries = 0  # message events queued to its sockets, live


class _FanOutCollector(Collector):
    def __init__(self, counts: FanOutCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "topichub_messages_published",
            "Messages fanned out by this node",
            value=self.counts.published,
        )
        yield CounterMetricFamily(
            "topichub_deliveries",
            "Message events written to sockets (live)",
            value=self.counts.deliveries,
        )


class _BrokerCollector(Collector):
    """Reads the broker's own counters at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.stats()
        yield GaugeMetricFamily(
            "topichub_broker_connected",
            "1 while the broker reaches the other nodes",
            value=stats.get("connected", 0),
        )
        yield CounterMetricFamily(
            "topichub_broker_reconnects",
            "Times the broker lost and re-made its connection",
            value=stats.get("reconnects", 0),
        )
        yield CounterMetricFamily(
            "topichub_broker_publish_errors",
            "Events that could not be sent to other nodes",
            value=stats.get("publish_errors", 0),
        )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Migrations and the WebSocket library are chatty at INFO; their warnings still show.
    for noisy in ("alembic", "websockets.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
