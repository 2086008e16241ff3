"""topichub.wire.events: replies and server events of PROTOCOL.md, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from topichub.errors import (
    NotFound,
    RateLimited,
    TooLarge,
    TopicHubError,
    UnknownAction,
)
from topichub.gateway.frames import text_frame, text_frame_header
from topichub.models import MessageRecord, TopicSummary
from topichub.names import direct_topic_name
from topichub.wire.events import (
    connected_event,
    error_event,
    error_reply,
    format_timestamp,
    invited_event,
    message_event,
    message_fields,
    ok_reply,
    pending_page,
    publish_ok,
    topic_summary,
    view_name,
)


def ms(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    millis: int = 0,
) -> int:
    """Milliseconds since the epoch of a UTC wall-clock time."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(moment.timestamp()) * 1000 + millis


def decoded(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    assert isinstance(value, dict)
    return value


def topic_record(content: str = '"hola"', **overrides: Any) -> MessageRecord:
    fields: dict[str, Any] = {
        "topic_id": 7,
        "topic_name": "noticias",
        "seq": 12,
        "sender": "diego",
        "content": content,
        "sent_at_ms": ms(2026, 11, 27, 19, 0, 0, millis=123),
    }
    fields.update(overrides)
    return MessageRecord(**fields)


def direct_record(sender: str = "omar", a: str = "omar", b: str = "diego") -> MessageRecord:
    first, second = sorted((a, b))
    return MessageRecord(
        topic_id=9,
        topic_name=direct_topic_name(a, b),
        seq=3,
        sender=sender,
        content='{"text": "hey"}',
        sent_at_ms=ms(2026, 1, 2, 3, 4, 5, millis=6),
        direct_pair=(first, second),
    )


# -- sent_at ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1000, "1970-01-01T00:00:01.000Z"),
        (ms(2026, 11, 27, 19, 0, 0, millis=123), "2026-11-27T19:00:00.123Z"),
        (ms(2024, 2, 29, 23, 59, 59, millis=999), "2024-02-29T23:59:59.999Z"),
        (ms(2031, 12, 31, 0, 0, 0, millis=50), "2031-12-31T00:00:00.050Z"),
    ],
)
def test_timestamps_are_utc_with_milliseconds_and_z(millis: int, text: str) -> None:
    assert format_timestamp(millis) == text
    assert len(text) == 24


def test_timestamp_round_trips_through_fromisoformat() -> None:
    stamp = ms(2026, 5, 6, 7, 8, 9, millis=345)
    parsed = datetime.fromisoformat(format_timestamp(stamp).replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    assert int(parsed.timestamp() * 1000) == stamp


# -- message events --------------------------------------------------------------------------


def test_topic_message_event() -> None:
    event = decoded(message_event(topic_record(), "anyone"))
    assert event == {
        "event": "message",
        "topic_name": "noticias",
        "from": "diego",
        "content": "hola",
        "seq": 12,
        "sent_at": "2026-11-27T19:00:00.123Z",
        "direct": False,
        "pending": False,
    }
    assert list(event) == [
        "event",
        "topic_name",
        "from",
        "content",
        "seq",
        "sent_at",
        "direct",
        "pending",
    ]


def test_pending_flag() -> None:
    assert decoded(message_event(topic_record(), "x", pending=True))["pending"] is True
    assert decoded(message_event(topic_record(), "x", pending=False))["pending"] is False


def test_a_topic_message_looks_the_same_to_every_viewer() -> None:
    record = topic_record()
    assert message_event(record, "") == message_event(record, "diego")
    assert message_event(record, "diego") == message_event(record, "omar")


@pytest.mark.parametrize(
    "content",
    [
        None,
        0,
        -1.25,
        True,
        "",
        "ñandú 🚀",
        [],
        {},
        [1, [2, [3, [None]]]],
        {"a": {"b": {"c": [1, "two", None, False]}}, "z": None},
    ],
)
def test_content_is_spliced_in_as_any_json_value(content: Any) -> None:
    record = topic_record(content=orjson.dumps(content).decode())
    event = decoded(message_event(record, "x"))
    assert event["content"] == content
    assert "content" in event


def test_content_text_is_spliced_verbatim() -> None:
    # The publisher's JSON text goes out unchanged, never re-encoded per recipient.
    data = message_event(topic_record(content='{"b":1,"a":[null]}'), "x")
    assert b'"content":{"b":1,"a":[null]}' in data


def test_message_fields_match_the_encoded_event() -> None:
    record = topic_record()
    fields = message_fields(record, "x", pending=True)
    assert orjson.dumps(fields) == message_event(record, "x", pending=True)


@pytest.mark.parametrize("viewer", ["x", "omar", "diego", "ñandú"])
def test_a_pending_page_is_byte_for_byte_the_single_encoding_framed(viewer: str) -> None:
    """The replay's page encoder splices bytes by hand: it must equal message_event, each
    behind its text frame header, in either length form a message event can take (16 or
    64 bits: the fixed fields alone are over 125 bytes)."""
    topic_page = [
        topic_record(seq=n, content=content, sender=sender, sent_at_ms=stamp)
        for n, (content, sender, stamp) in enumerate(
            [
                ('"hola"', "diego", 0),
                ('{"b":1,"a":[null,"\\u00e9"]}', "ñandú", ms(2026, 11, 27, 23, 59, 59, 999)),
                ("12.5e3", 'quo"te', ms(2031, 1, 1)),
                ("[]", "diego", 0),  # a sender and a millisecond seen before in the page
                ('"%s"' % ("é" * 60), "ñandú", 1),  # non-ASCII: bytes, not characters
                ('"%s"' % ("x" * 70_000), "diego", 2),  # a 64-bit length
                ("1", "d", 3),
            ],
            start=1,
        )
    ]
    direct_page = [direct_record(sender="omar"), direct_record(sender="diego")]
    for page in (topic_page, direct_page):
        first = page[0]
        rows = [(r.seq, r.sender, r.content.encode(), r.sent_at_ms) for r in page]
        framed = pending_page(
            rows, view_name(first, viewer), first.direct_pair is not None, text_frame_header
        )
        assert framed == b"".join(text_frame(message_event(r, viewer, pending=True)) for r in page)
    sizes = {len(message_event(r, viewer, pending=True)) for r in topic_page}
    assert min(sizes) >= 126 and any(n < 65536 for n in sizes) and max(sizes) >= 65536
    assert pending_page([], "x", False, text_frame_header) == b""


# -- direct messages: topic_name is the name to reply to -------------------------------------


def test_direct_message_recipient_sees_the_sender() -> None:
    record = direct_record(sender="omar", a="omar", b="diego")
    event = decoded(message_event(record, "diego"))
    assert event["topic_name"] == "omar"
    assert event["from"] == "omar"
    assert event["direct"] is True


def test_direct_message_sender_sees_the_recipient() -> None:
    record = direct_record(sender="omar", a="omar", b="diego")
    event = decoded(message_event(record, "omar"))
    assert event["topic_name"] == "diego"
    assert event["from"] == "omar"
    assert event["direct"] is True


@pytest.mark.parametrize(("a", "b"), [("alice", "bob"), ("bob", "alice"), ("Zed", "amy")])
def test_view_name_for_each_side_whatever_the_order(a: str, b: str) -> None:
    record = direct_record(sender=a, a=a, b=b)
    assert view_name(record, a) == b
    assert view_name(record, b) == a


def test_view_name_of_a_topic_is_the_topic() -> None:
    record = topic_record()
    assert view_name(record, "diego") == "noticias"
    assert view_name(record, "someone") == "noticias"


def test_view_name_for_an_outsider_is_the_internal_name() -> None:
    record = direct_record(a="omar", b="diego")
    assert view_name(record, "satoshi") == direct_topic_name("omar", "diego")


def test_direct_message_event_in_full() -> None:
    record = direct_record(sender="diego", a="diego", b="omar")
    assert decoded(message_event(record, "omar", pending=True)) == {
        "event": "message",
        "topic_name": "diego",
        "from": "diego",
        "content": {"text": "hey"},
        "seq": 3,
        "sent_at": "2026-01-02T03:04:05.006Z",
        "direct": True,
        "pending": True,
    }


# -- other events ----------------------------------------------------------------------------


def test_connected_event() -> None:
    assert decoded(connected_event("diego", 3)) == {
        "event": "connected",
        "username": "diego",
        "pending": 3,
    }
    assert decoded(connected_event("omar", 0))["pending"] == 0


def test_invited_event() -> None:
    assert decoded(invited_event("gdcode", "memoor")) == {
        "event": "invited",
        "topic_name": "gdcode",
        "by": "memoor",
    }


def test_error_event() -> None:
    assert decoded(error_event(TooLarge("too big"))) == {
        "event": "error",
        "error": "too_large",
        "message": "too big",
    }
    assert decoded(error_event(TopicHubError())) == {
        "event": "error",
        "error": "internal_error",
        "message": "internal error",
    }


# -- replies ---------------------------------------------------------------------------------


def test_ok_reply_without_ref() -> None:
    assert decoded(ok_reply("ping", None)) == {"action": "ping", "result": "ok"}


@pytest.mark.parametrize(("ref", "client_id"), [(None, None), (7, None), ("r", "c-1"), (None, 9)])
def test_publish_ok_is_the_ok_reply_of_a_publish(ref: str | int | None, client_id: object) -> None:
    fields: dict[str, object] = {"topic_name": "news", "seq": 42}
    if client_id is not None:
        fields["id"] = client_id
    expected = ok_reply("message", ref, **fields)
    assert publish_ok("message", ref, "news", 42, client_id) == expected
    assert decoded(expected)["seq"] == 42


@pytest.mark.parametrize("ref", ["r1", "", 0, 17, -2])
def test_ok_reply_echoes_the_ref_unchanged(ref: str | int) -> None:
    reply = decoded(ok_reply("suscribe", ref, topic_name="t"))
    assert reply == {"action": "suscribe", "result": "ok", "topic_name": "t", "ref": ref}
    assert type(reply["ref"]) is type(ref)


def test_ok_reply_with_fields() -> None:
    reply = decoded(ok_reply("message", "m", topic_name="t", seq=4, id=9))
    assert reply == {
        "action": "message",
        "result": "ok",
        "topic_name": "t",
        "seq": 4,
        "id": 9,
        "ref": "m",
    }


def test_error_reply() -> None:
    reply = decoded(error_reply("subscribe", "r", NotFound("no topic 'x'"), topic_name="x"))
    assert reply == {
        "action": "subscribe",
        "result": "error",
        "error": "not_found",
        "message": "no topic 'x'",
        "topic_name": "x",
        "ref": "r",
    }


def test_error_reply_default_message() -> None:
    reply = decoded(error_reply("message", 5, RateLimited()))
    assert reply == {
        "action": "message",
        "result": "error",
        "error": "rate_limited",
        "message": "too many messages, slow down",
        "ref": 5,
    }


def test_error_reply_without_action_or_ref() -> None:
    reply = decoded(error_reply(None, None, UnknownAction("unknown action 'x'")))
    assert reply == {"result": "error", "error": "unknown_action", "message": "unknown action 'x'"}


def test_ref_zero_is_echoed_on_errors() -> None:
    assert decoded(error_reply("ack", 0, NotFound()))["ref"] == 0


# -- list_topics rows ------------------------------------------------------------------------


def test_topic_summary() -> None:
    row = topic_summary(TopicSummary("gdcode", True, "memoor", 3, False))
    assert row == {
        "topic_name": "gdcode",
        "is_private": True,
        "owner": "memoor",
        "members": 3,
        "member": False,
    }


def test_topic_summary_without_owner() -> None:
    row = topic_summary(TopicSummary("noticias", False, None, 0, True))
    assert row == {
        "topic_name": "noticias",
        "is_private": False,
        "owner": None,
        "members": 0,
        "member": True,
    }
