"""Delivery of events between nodes: in-process by default, Redis across nodes."""

from topichub.broker.base import (
    Broker,
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    Resync,
    TopicDeleted,
    UserDeleted,
    open_broker,
)

__all__ = [
    "Broker",
    "BrokerEvent",
    "MembershipChanged",
    "MessagePublished",
    "Resync",
    "TopicDeleted",
    "UserDeleted",
    "open_broker",
]
