"""Broker events <-> bytes, for brokers that cross process boundaries. Pure functions."""

from __future__ import annotations

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


def encode_event(node_id: str, event: BrokerEvent) -> bytes:
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
    body["node"] = node_id
    return orjson.dumps(body)


def decode_event(data: bytes | str) -> tuple[str, BrokerEvent]:
    body = orjson.loads(data)
    node = str(body["node"])
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
        return node, MessagePublished(record)
    if kind == "membership":
        return node, MembershipChanged(
            body["topic_id"],
            body["topic_name"],
            body["username"],
            body["joined"],
            body.get("invited_by"),
            body.get("since_seq"),
        )
    if kind == "topic_deleted":
        return node, TopicDeleted(body["topic_id"])
    if kind == "user_deleted":
        return node, UserDeleted(body["username"])
    if kind == "resync":
        return node, Resync()
    raise ValueError(f"unknown broker event type {kind!r}")
