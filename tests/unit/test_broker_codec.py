"""topichub.broker.codec: broker events to bytes and back, one at a time and in batches."""

from __future__ import annotations

import orjson

from topichub.broker.base import (
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    Resync,
    TopicDeleted,
    UserDeleted,
)
from topichub.broker.codec import (
    batch_sender,
    decode_batch,
    decode_event,
    encode_batches,
    encode_event,
)
from topichub.models import MessageRecord

NODE = "0123456789abcdef0123456789abcdef"


def message(seq: int, content: str = '{"text":"hi"}') -> MessagePublished:
    return MessagePublished(
        MessageRecord(7, "news", seq, "alice", content, 1_700_000_000_000, f"c-{seq}", None)
    )


EVERY_KIND: list[BrokerEvent] = [
    message(1),
    MessagePublished(
        MessageRecord(9, "dm:alice:bob", 3, "bob", "[1,2]", 1, None, ("alice", "bob"))
    ),
    MembershipChanged(7, "news", "bob", True, "alice", 12),
    MembershipChanged(7, "news", "bob", False),
    TopicDeleted(7),
    UserDeleted("carol"),
    Resync(),
]


def test_a_batch_carries_every_kind_of_event_in_order() -> None:
    (data,) = encode_batches(NODE, EVERY_KIND)
    assert batch_sender(data) == NODE
    assert decode_batch(data) == (NODE, EVERY_KIND)


def test_a_lone_event_is_still_read() -> None:
    """The form of one event per message (what earlier nodes sent) decodes too."""
    for event in EVERY_KIND:
        data = encode_event(NODE, event)
        assert batch_sender(data) is None
        assert decode_event(data) == (NODE, event)
        assert decode_batch(data) == (NODE, [event])


def test_batches_are_split_by_size_and_keep_the_order() -> None:
    events = [message(seq, orjson.dumps("x" * 1000).decode()) for seq in range(1, 101)]
    batches = encode_batches(NODE, events, max_bytes=10_000)
    assert len(batches) > 5
    assert all(len(b) <= 10_000 + 1200 for b in batches)  # at most one event past the cap
    decoded = [event for data in batches for event in decode_batch(data)[1]]
    assert decoded == events


def test_an_event_larger_than_the_cap_goes_alone() -> None:
    big = message(1, orjson.dumps("y" * 50_000).decode())
    batches = encode_batches(NODE, [message(0), big, message(2)], max_bytes=1_000)
    assert [len(decode_batch(b)[1]) for b in batches] == [1, 1, 1]
    assert decode_batch(batches[1])[1] == [big]


def test_content_is_carried_as_its_json_text() -> None:
    """The publisher's JSON text crosses nodes unchanged (no re-encoding of numbers or
    key order)."""
    text = '{"b":1.50,"a":[1e3]}'
    (data,) = encode_batches(NODE, [message(1, text)])
    (event,) = decode_batch(data)[1]
    assert isinstance(event, MessagePublished) and event.record.content == text
