"""topichub.wire.codec.decode_action: every client frame of PROTOCOL.md, "Frames".

Pure tests: strings in, typed actions (or a BadFrame with the matching error) out.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from topichub.errors import InvalidJson, InvalidRequest, UnknownAction
from topichub.wire.actions import (
    Ack,
    BadFrame,
    Create,
    Disconnect,
    History,
    Invite,
    ListTopics,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
)
from topichub.wire.codec import (
    HISTORY_DEFAULT_LIMIT,
    HISTORY_MAX_LIMIT,
    MAX_REF_CHARS,
    MAX_SEQ,
    PARSERS,
    decode_action,
)


def frame(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def bad(text: str | bytes) -> BadFrame:
    result = decode_action(text)
    assert isinstance(result, BadFrame), result
    return result


def invalid(text: str | bytes) -> BadFrame:
    result = bad(text)
    assert type(result.error) is InvalidRequest, result.error
    assert result.error.code == "invalid_request"
    return result


# -- every action parses -------------------------------------------------------------------


def test_the_parser_table_is_the_protocol_action_list() -> None:
    assert set(PARSERS) == {
        "subscribe",
        "suscribe",
        "unsubscribe",
        "create",
        "invite",
        "message",
        "list_topics",
        "history",
        "ack",
        "ping",
        "disconnect",
    }


def test_subscribe() -> None:
    assert decode_action(frame(action="subscribe", topic_name="news")) == Subscribe(
        "subscribe", None, "news"
    )


def test_suscribe_is_kept_as_sent() -> None:
    action = decode_action(frame(action="suscribe", topic_name="news", ref="a"))
    assert action == Subscribe("suscribe", "a", "news")


def test_unsubscribe() -> None:
    assert decode_action(frame(action="unsubscribe", topic_name="news", ref=7)) == Unsubscribe(
        "unsubscribe", 7, "news"
    )


def test_create_is_private_defaults_to_false() -> None:
    assert decode_action(frame(action="create", topic_name="news")) == Create(
        "create", None, "news", False
    )
    assert decode_action(frame(action="create", topic_name="n", is_private=True)) == Create(
        "create", None, "n", True
    )
    assert decode_action(frame(action="create", topic_name="n", is_private=False)) == Create(
        "create", None, "n", False
    )


def test_invite() -> None:
    assert decode_action(frame(action="invite", topic_name="t", username="bob")) == Invite(
        "invite", None, "t", "bob"
    )


def test_message_with_and_without_id() -> None:
    assert decode_action(frame(action="message", topic_name="t", content="hi")) == Publish(
        "message", None, "t", '"hi"', None
    )
    assert decode_action(
        frame(action="message", topic_name="t", content=1, id="m-1", ref="r")
    ) == Publish("message", "r", "t", "1", "m-1")
    assert decode_action(frame(action="message", topic_name="t", content=1, id=42)) == Publish(
        "message", None, "t", "1", 42
    )
    # An explicit null id is no id.
    assert decode_action(frame(action="message", topic_name="t", content=1, id=None)) == Publish(
        "message", None, "t", "1", None
    )


@pytest.mark.parametrize(
    "content",
    [
        None,
        0,
        -3.5,
        True,
        False,
        "",
        "texto con acentos: ñandú",
        [],
        [1, [2, [3, None]]],
        {},
        {"text": "hola", "nested": {"list": [1, {"deep": None}], "flag": True}},
    ],
)
def test_message_content_is_any_json_value(content: Any) -> None:
    action = decode_action(frame(action="message", topic_name="t", content=content))
    assert isinstance(action, Publish)
    assert orjson.loads(action.content) == content
    assert action.content == orjson.dumps(content).decode()


def test_message_content_null_is_not_missing() -> None:
    action = decode_action('{"action": "message", "topic_name": "t", "content": null}')
    assert action == Publish("message", None, "t", "null", None)


def test_list_topics_ping_disconnect_ignore_extra_fields() -> None:
    assert decode_action(frame(action="list_topics", extra=1)) == ListTopics("list_topics", None)
    assert decode_action(frame(action="ping", ref="p")) == Ping("ping", "p")
    assert decode_action(frame(action="disconnect", ref=0)) == Disconnect("disconnect", 0)


def test_history_defaults() -> None:
    assert decode_action(frame(action="history", topic_name="t")) == History(
        "history", None, "t", None, None, HISTORY_DEFAULT_LIMIT
    )
    assert HISTORY_DEFAULT_LIMIT == 50


def test_history_fields() -> None:
    assert decode_action(
        frame(action="history", topic_name="t", before=10, since=2, limit=5)
    ) == History("history", None, "t", 10, 2, 5)
    assert decode_action(frame(action="history", topic_name="t", since=0)) == History(
        "history", None, "t", None, 0, 50
    )


@pytest.mark.parametrize(("sent", "kept"), [(1, 1), (99, 99), (100, 100), (101, 100), (10**6, 100)])
def test_history_limit_over_100_is_cut_to_100(sent: int, kept: int) -> None:
    action = decode_action(frame(action="history", topic_name="t", limit=sent))
    assert isinstance(action, History)
    assert action.limit == kept
    assert HISTORY_MAX_LIMIT == 100


def test_history_null_fields_mean_absent() -> None:
    text = '{"action": "history", "topic_name": "t", "before": null, "since": null, "limit": null}'
    assert decode_action(text) == History("history", None, "t", None, None, 50)


def test_ack() -> None:
    assert decode_action(frame(action="ack", topic_name="t", seq=3, ref="x")) == Ack(
        "ack", "x", "t", 3
    )
    assert decode_action(frame(action="ack", topic_name="t", seq=0)) == Ack("ack", None, "t", 0)


# -- ref -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["abc", "", "x" * MAX_REF_CHARS, 0, 1, -5, 2**62])
def test_valid_refs_are_kept_unchanged(ref: str | int) -> None:
    action = decode_action(frame(action="ping", ref=ref))
    assert action == Ping("ping", ref)
    assert MAX_REF_CHARS == 64


def test_ref_is_kept_on_errors_after_it_was_read() -> None:
    result = invalid(frame(action="subscribe", ref="r1"))
    assert (result.action, result.ref) == ("subscribe", "r1")
    result = bad(frame(action="nope", ref=9))
    assert (result.action, result.ref) == ("nope", 9)


@pytest.mark.parametrize(
    "ref",
    ["x" * (MAX_REF_CHARS + 1), 1.5, True, False, ["a"], {"a": 1}],
)
def test_bad_refs_are_invalid_requests(ref: Any) -> None:
    result = invalid(frame(action="ping", ref=ref))
    # The action is known and echoed; the bad ref is not.
    assert result.action == "ping"
    assert result.ref is None
    assert "ref" in str(result.error)


def test_an_integer_ref_beyond_64_bits_is_not_an_integer() -> None:
    # 65 digits: longer than 64 characters whatever the JSON parser makes of it.
    result = invalid('{"action": "ping", "ref": ' + "9" * 65 + "}")
    assert (result.action, result.ref) == ("ping", None)


def test_ref_is_echoed_when_action_is_missing_or_not_a_string() -> None:
    result = invalid(frame(ref="lost"))
    assert (result.action, result.ref) == (None, "lost")
    result = invalid(frame(action=5, ref=3))
    assert (result.action, result.ref) == (None, 3)


# -- wrong field types -> invalid_request ----------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        # topic_name missing, empty, not a string, too long
        {"action": "subscribe"},
        {"action": "subscribe", "topic_name": ""},
        {"action": "subscribe", "topic_name": 5},
        {"action": "subscribe", "topic_name": None},
        {"action": "subscribe", "topic_name": ["t"]},
        {"action": "suscribe", "topic_name": "x" * 65},
        {"action": "unsubscribe", "topic_name": True},
        {"action": "create", "topic_name": {}},
        {"action": "create", "topic_name": "t", "is_private": "yes"},
        {"action": "create", "topic_name": "t", "is_private": 1},
        {"action": "create", "topic_name": "t", "is_private": None},
        {"action": "invite", "topic_name": "t"},
        {"action": "invite", "topic_name": "t", "username": 3},
        {"action": "invite", "username": "bob"},
        {"action": "message", "topic_name": "t"},
        {"action": "message", "content": "x"},
        {"action": "message", "topic_name": 1, "content": "x"},
        {"action": "message", "topic_name": "t", "content": "x", "id": True},
        {"action": "message", "topic_name": "t", "content": "x", "id": 1.5},
        {"action": "message", "topic_name": "t", "content": "x", "id": ""},
        {"action": "message", "topic_name": "t", "content": "x", "id": "i" * 65},
        {"action": "message", "topic_name": "t", "content": "x", "id": ["a"]},
        {"action": "history"},
        {"action": "history", "topic_name": "t", "limit": 0},
        {"action": "history", "topic_name": "t", "limit": -1},
        {"action": "history", "topic_name": "t", "limit": "10"},
        {"action": "history", "topic_name": "t", "limit": 2.5},
        {"action": "history", "topic_name": "t", "limit": True},
        {"action": "history", "topic_name": "t", "before": "3"},
        {"action": "history", "topic_name": "t", "before": -1},
        {"action": "history", "topic_name": "t", "since": 1.0},
        {"action": "history", "topic_name": "t", "since": False},
        {"action": "ack", "topic_name": "t"},
        {"action": "ack", "topic_name": "t", "seq": None},
        {"action": "ack", "topic_name": "t", "seq": "1"},
        {"action": "ack", "topic_name": "t", "seq": -1},
        {"action": "ack", "seq": 1},
    ],
)
def test_wrong_fields_are_invalid_requests(fields: dict[str, Any]) -> None:
    result = invalid(frame(ref="w", **fields))
    assert result.action == fields["action"]
    assert result.ref == "w"


def test_invalid_request_messages_name_the_field() -> None:
    assert "'topic_name'" in str(invalid(frame(action="subscribe")).error)
    assert "'content'" in str(invalid(frame(action="message", topic_name="t")).error)
    assert "'seq'" in str(invalid(frame(action="ack", topic_name="t")).error)
    assert "'is_private'" in str(
        invalid(frame(action="create", topic_name="t", is_private="no")).error
    )


def test_a_64_character_topic_name_is_accepted() -> None:
    name = "n" * 64
    assert decode_action(frame(action="subscribe", topic_name=name)) == Subscribe(
        "subscribe", None, name
    )


def test_a_64_character_id_is_accepted() -> None:
    action = decode_action(frame(action="message", topic_name="t", content=1, id="i" * 64))
    assert isinstance(action, Publish)
    assert action.client_id == "i" * 64


# -- frame level errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "action", ["SUBSCRIBE", "subscribe ", "publish", "", "list-topics", "suscribir"]
)
def test_unknown_action(action: str) -> None:
    result = bad(frame(action=action, ref="u", topic_name="t"))
    assert type(result.error) is UnknownAction
    assert result.error.code == "unknown_action"
    assert (result.action, result.ref) == (action, "u")


def test_unknown_action_with_a_bad_ref_is_invalid_request() -> None:
    result = invalid(frame(action="nope", ref=1.5))
    assert result.ref is None


@pytest.mark.parametrize(
    "text",
    ["", " ", "{", "not json", "{'action': 'ping'}", '{"action": "ping",}', "NaN", b"\xff\xfe"],
)
def test_not_json_is_invalid_json(text: str | bytes) -> None:
    result = bad(text)
    assert type(result.error) is InvalidJson
    assert result.error.code == "invalid_json"
    assert (result.action, result.ref) == (None, None)


@pytest.mark.parametrize("text", ["[]", '["ping"]', '"ping"', "1", "null", "true", "[{}]"])
def test_json_that_is_not_an_object_is_invalid_request(text: str) -> None:
    result = invalid(text)
    assert (result.action, result.ref) == (None, None)


@pytest.mark.parametrize("value", [None, 1, True, ["ping"], {"name": "ping"}])
def test_action_must_be_a_string(value: Any) -> None:
    result = invalid(frame(action=value))
    assert result.action is None
    assert "'action'" in str(result.error)


def test_missing_action_is_invalid_request() -> None:
    result = invalid("{}")
    assert result.action is None


def test_bytes_are_decoded_like_text() -> None:
    assert decode_action(b'{"action": "ping", "ref": "b"}') == Ping("ping", "b")


# -- topic_name is carried by error replies where the request had it -----------------------


def test_bad_frames_keep_the_topic_name() -> None:
    assert invalid(frame(action="message", topic_name="t1")).topic_name == "t1"
    assert bad(frame(action="nope", topic_name="t2")).topic_name == "t2"
    assert invalid(frame(action="ping", topic_name="t3", ref=1.5)).topic_name == "t3"
    assert invalid(frame(action=1, topic_name="t4")).topic_name == "t4"
    assert invalid(frame(action="create", topic_name="t5", is_private="x")).topic_name == "t5"


def test_bad_frames_without_a_string_topic_name_have_none() -> None:
    assert invalid(frame(action="subscribe")).topic_name is None
    assert invalid(frame(action="subscribe", topic_name=5)).topic_name is None
    assert bad("not json").topic_name is None


# -- limits of what can be stored ------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nested_content_within_the_encoder_limit() -> None:
    text = '{"action": "message", "topic_name": "t", "content": ' + nested(200) + "}"
    action = decode_action(text)
    assert isinstance(action, Publish)
    assert action.content == nested(200)


def test_content_nested_too_deep_to_store_is_invalid_request() -> None:
    text = '{"action": "message", "topic_name": "t", "ref": 1, "content": ' + nested(300) + "}"
    result = invalid(text)
    assert (result.action, result.ref, result.topic_name) == ("message", 1, "t")
    assert "'content'" in str(result.error)


def test_json_nested_beyond_the_parser_limit_is_invalid_json() -> None:
    result = bad('{"action": "message", "topic_name": "t", "content": ' + nested(5000) + "}")
    assert type(result.error) is InvalidJson


@pytest.mark.parametrize("key", ["before", "since"])
def test_history_positions_fit_the_store(key: str) -> None:
    assert MAX_SEQ == 2**63 - 1
    action = decode_action(frame(action="history", topic_name="t", **{key: MAX_SEQ}))
    assert isinstance(action, History)
    assert getattr(action, key) == MAX_SEQ
    result = invalid(frame(action="history", topic_name="t", ref="big", **{key: MAX_SEQ + 1}))
    assert (result.action, result.ref) == ("history", "big")


def test_ack_seq_fits_the_store() -> None:
    assert decode_action(frame(action="ack", topic_name="t", seq=MAX_SEQ)) == Ack(
        "ack", None, "t", MAX_SEQ
    )
    invalid(frame(action="ack", topic_name="t", seq=MAX_SEQ + 1))
