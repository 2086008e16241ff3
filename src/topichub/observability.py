"""Prometheus metrics of one node (served at ``/metrics``) and logging setup."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
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
        self.published = Counter(
            "topichub_messages_published",
            "Messages appended to a topic log",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "topichub_deliveries",
            "Message events written to sockets (live)",
            registry=self.registry,
        )
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
