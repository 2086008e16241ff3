"""Broker events <-> bytes, for brokers that cross process boundaries. Pure functions.

A *batch* is how events cross Redis: ``<node id> SP <JSON array of events>``, many events
per pub/sub message. The node id comes first, outside the JSON, so a node drops its own
echoes without parsing them, and a receiver pays the per-message cost of pub/sub once per
batch rather than once per event. A receiver also takes a lone event (``encode_event``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from topichub.broker.base import (
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    Resync,
    TopicDeleted,
    UserDeleted,
)
from topichub.models import MessageRecord


def encode_batches(
    node_id: str, events: Iterable[BrokerEvent], max_bytes: int = 256 * 1024
) -> list[bytes]:
    """Events from one node, in order, as few messages as fit ``max_bytes`` each (an event
    larger than that goes alone). Redis cuts a subscriber whose unread output passes
    32 MiB by default, so a message must stay well under it."""
    head = node_id.encode() + b" ["
    batches: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for event in events:
        body = orjson.dumps(_body(event))
        if parts and size + len(body) > max_bytes:
            batches.append(head + b",".join(parts) + b"]")
            parts, size = [], 0
        parts.append(body)
        size += len(body) + 1
    if parts:
        batches.append(head + b",".join(parts) + b"]")
    return batches


def batch_sender(data: bytes) -> str | None:
    """The node that sent a batch, read without parsing it; None if ``data`` is a lone
    event."""
    head, space, _ = data[:64].partition(b" ")
    return head.decode() if space and not data.startswith(b"{") else None


def decode_batch(data: bytes) -> tuple[str, list[BrokerEvent]]:
    """(sending node, its events in order) from a batch or from a lone event."""
    if data.startswith(b"{"):
        node, event = decode_event(data)
        return node, [event]
    head, _, body = data.partition(b" ")
    return head.decode(), [_event(item) for item in orjson.loads(body)]


def encode_event(node_id: str, event: BrokerEvent) -> bytes:
    """One event with its sender inside (the form of a lone event)."""
    body = _body(event)
    body["node"] = node_id
    return orjson.dumps(body)


def _body(event: BrokerEvent) -> dict[str, Any]:
    body: dict[str, Any]
    match event:
        case MessagePublished(record=r):
            body = {
                "type": "message",
                "topic_id": r.topic_id,
                "topic_name": r.topic_name,
                "seq": r.seq,
                "sender": r.sender,
                "content": r.content,  # the JSON text, carried as is
                "sent_at_ms": r.sent_at_ms,
                "client_id": r.client_id,
                "direct_pair": r.direct_pair,
            }
        case MembershipChanged():
            body = {
                "type": "membership",
                "topic_id": event.topic_id,
                "topic_name": event.topic_name,
                "username": event.username,
                "joined": event.joined,
                "invited_by": event.invited_by,
                "since_seq": event.since_seq,
            }
        case TopicDeleted(topic_id=topic_id):
            body = {"type": "topic_deleted", "topic_id": topic_id}
        case UserDeleted(username=username):
            body = {"type": "user_deleted", "username": username}
        case Resync():
            body = {"type": "resync"}
    return body


def decode_event(data: bytes | str) -> tuple[str, BrokerEvent]:
    body = orjson.loads(data)
    return str(body["node"]), _event(body)


def _event(body: dict[str, Any]) -> BrokerEvent:
    kind = body["type"]
    if kind == "message":
        pair = body.get("direct_pair")
        record = MessageRecord(
            topic_id=body["topic_id"],
            topic_name=body["topic_name"],
            seq=body["seq"],
            sender=body["sender"],
            content=body["content"],
            sent_at_ms=body["sent_at_ms"],
            client_id=body.get("client_id"),
            direct_pair=(pair[0], pair[1]) if pair else None,
        )
        return MessagePublished(record)
    if kind == "membership":
        return MembershipChanged(
            body["topic_id"],
            body["topic_name"],
            body["username"],
            body["joined"],
            body.get("invited_by"),
            body.get("since_seq"),
        )
    if kind == "topic_deleted":
        return TopicDeleted(body["topic_id"])
    if kind == "user_deleted":
        return UserDeleted(body["username"])
    if kind == "resync":
        return Resync()
    raise ValueError(f"unknown broker event type {kind!r}")
