"""Encode replies and server events into frame bytes (PROTOCOL.md, "Server events").

A message event is encoded once per topic (per side of a direct conversation) and the same
bytes go to every socket; the content is spliced in as the publisher's JSON text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from topichub.errors import TopicHubError
from topichub.models import MessageRecord, PageRow, Topic, TopicSummary
from topichub.wire.actions import Ref


@functools.lru_cache(maxsize=1024)
def format_timestamp(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` suffix. Cached: a group commit stamps
    all its messages with one time, so a busy node formats each millisecond once."""
    return f"{_second(ms // 1000)}{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    # Messages come in bursts within a second: format each second once, not each message.
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _name_for(name: str, direct_pair: tuple[str, str] | None, viewer: str) -> str:
    """The name a viewer uses: for a direct conversation, the other user (the name to reply
    to); a viewer outside the pair sees the stored name."""
    if direct_pair is None:
        return name
    first, second = direct_pair
    if viewer == first:
        return second
    if viewer == second:
        return first
    return name


def view_name(record: MessageRecord, viewer: str) -> str:
    """The ``topic_name`` a viewer sees on a message event."""
    return _name_for(record.topic_name, record.direct_pair, viewer)


def view_topic_name(topic: Topic, viewer: str) -> str:
    """The ``topic_name`` a viewer uses for a topic."""
    return _name_for(topic.name, topic.direct_pair, viewer)


def message_fields(record: MessageRecord, viewer: str, *, pending: bool) -> dict[str, Any]:
    return {
        "event": "message",
        "topic_name": view_name(record, viewer),
        "from": record.sender,
        "content": orjson.Fragment(record.content),
        "seq": record.seq,
        "sent_at": format_timestamp(record.sent_at_ms),
        "direct": record.direct_pair is not None,
        "pending": pending,
    }


def message_event(record: MessageRecord, viewer: str, *, pending: bool = False) -> bytes:
    return orjson.dumps(message_fields(record, viewer, pending=pending))


# The fixed pieces of a message event between its variable ones (pending_page).
_CONTENT = b',"content":'
_SEQ = b',"seq":'
_SENT_AT = b',"sent_at":"'


def pending_page(
    rows: Sequence[PageRow],
    topic_name: str,
    direct: bool,
    frame_header: Callable[[int], bytes],
) -> bytes:
    """The message events of a page of one topic's pending rows (a pending replay; the
    content is the stored JSON text's UTF-8 bytes), each behind its
    ``frame_header(size)``, as one bytes to write.

    The same bytes as ``text_frame(message_event(record, ...))`` per row, built without a
    MessageRecord, a dict or a copy per row: what the page shares (the name as the viewer
    sees it, the flags) is encoded once, a sender or a millisecond once per page, and the
    pieces of every frame are joined once. A replay of 100,000s of messages spends most of
    its time here."""
    head = b'{"event":"message","topic_name":' + orjson.dumps(topic_name) + b',"from":'
    tail = b'","direct":%s,"pending":true}' % (b"true" if direct else b"false")
    fixed = len(head) + len(_CONTENT) + len(_SEQ) + len(_SENT_AT) + len(tail)
    senders: dict[str, bytes] = {}
    stamps: dict[int, bytes] = {}
    parts: list[bytes] = []
    add = parts.extend
    for seq, sender, content_json, sent_at_ms in rows:
        sender_json = senders.get(sender)
        if sender_json is None:
            sender_json = senders[sender] = orjson.dumps(sender)
        stamp = stamps.get(sent_at_ms)
        if stamp is None:
            stamp = stamps[sent_at_ms] = format_timestamp(sent_at_ms).encode()
        seq_text = b"%d" % seq
        size = fixed + len(sender_json) + len(content_json) + len(seq_text) + len(stamp)
        add(
            (
                frame_header(size),
                head,
                sender_json,
                _CONTENT,
                content_json,
                _SEQ,
                seq_text,
                _SENT_AT,
                stamp,
                tail,
            )
        )
    return b"".join(parts)


def connected_event(username: str, pending: int) -> bytes:
    return orjson.dumps({"event": "connected", "username": username, "pending": pending})


def messages_lost_event(topic_name: str, after_seq: int, upto_seq: int, count: int) -> bytes:
    """Retention removed messages past the member's cursor before they were delivered."""
    return orjson.dumps(
        {
            "event": "messages_lost",
            "topic_name": topic_name,
            "after_seq": after_seq,
            "upto_seq": upto_seq,
            "count": count,
        }
    )


def invited_event(topic_name: str, by: str) -> bytes:
    return orjson.dumps({"event": "invited", "topic_name": topic_name, "by": by})


def error_event(error: TopicHubError) -> bytes:
    return orjson.dumps({"event": "error", "error": error.code, "message": error.message})


def ok_reply(action: str, ref: Ref, **fields: Any) -> bytes:
    reply: dict[str, Any] = {"action": action, "result": "ok", **fields}
    if ref is not None:
        reply["ref"] = ref
    return orjson.dumps(reply)


def publish_ok(action: str, ref: Ref, topic_name: str, seq: int, client_id: object) -> bytes:
    """``ok_reply`` of a publish (the same bytes), without the keyword merging: one per
    publish."""
    reply: dict[str, Any] = {"action": action, "result": "ok", "topic_name": topic_name, "seq": seq}
    if client_id is not None:
        reply["id"] = client_id
    if ref is not None:
        reply["ref"] = ref
    return orjson.dumps(reply)


def error_reply(action: str | None, ref: Ref, error: TopicHubError, **fields: Any) -> bytes:
    reply: dict[str, Any] = {}
    if action is not None:
        reply["action"] = action
    reply.update(result="error", error=error.code, message=error.message, **fields)
    if ref is not None:
        reply["ref"] = ref
    return orjson.dumps(reply)


def topic_summary(summary: TopicSummary) -> dict[str, Any]:
    return {
        "topic_name": summary.name,
        "is_private": summary.is_private,
        "owner": summary.owner,
        "members": summary.members,
        "member": summary.member,
    }
