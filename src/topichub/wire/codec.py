"""Decode client frames into typed actions (PROTOCOL.md, "Frames").

:func:`decode_action` never raises: a frame that is not JSON, not an object with a string
``action``, has a field of the wrong type, or names an unknown action becomes a
:class:`BadFrame` carrying the matching error, so the gateway can answer and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from topichub.errors import InvalidJson, InvalidRequest, TopicHubError, UnknownAction
from topichub.wire.actions import (
    Ack,
    Action,
    BadFrame,
    ClientId,
    Create,
    Disconnect,
    History,
    Invite,
    ListTopics,
    Ping,
    Publish,
    Ref,
    Subscribe,
    Unsubscribe,
)

MAX_REF_CHARS = 64
MAX_CLIENT_ID_CHARS = 64
MAX_NAME_CHARS = 64
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 100
MAX_SEQ = 2**63 - 1  # the store's BIGINT

_MISSING = object()


# orjson builds only exact built-in types (never a subclass, and a bool is never an int
# here), so the checks below test ``type(value) is ...``: a fraction of isinstance's cost
# on a path every publish takes several times.


def _string(frame: dict[str, Any], key: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    value = frame.get(key, _MISSING)
    if type(value) is str and value and len(value) <= max_chars:
        return value
    if value is _MISSING:
        raise InvalidRequest(f"'{key}' is required")
    if type(value) is not str or not value:
        raise InvalidRequest(f"'{key}' must be a non-empty string")
    raise InvalidRequest(f"'{key}' must be at most {max_chars} characters")


def _optional_int(frame: dict[str, Any], key: str, *, minimum: int = 0) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{key}' must be an integer")
    if value < minimum:
        raise InvalidRequest(f"'{key}' must be at least {minimum}")
    if value > MAX_SEQ:
        raise InvalidRequest(f"'{key}' must be at most {MAX_SEQ}")
    return value


def _required_int(frame: dict[str, Any], key: str) -> int:
    value = _optional_int(frame, key)
    if value is None:
        raise InvalidRequest(f"'{key}' is required")
    return value


def _ref(frame: dict[str, Any]) -> Ref:
    ref = frame.get("ref")
    # orjson reads integers of at most 64 bits (20 characters): only a string can be long.
    if ref is None or type(ref) is int:
        return ref
    if type(ref) is not str:
        raise InvalidRequest("'ref' must be a string or an integer")
    if len(ref) > MAX_REF_CHARS:
        raise InvalidRequest(f"'ref' must be at most {MAX_REF_CHARS} characters")
    return ref


def _client_id(frame: dict[str, Any]) -> ClientId:
    value = frame.get("id")
    if value is None:
        return None
    if type(value) is not str and type(value) is not int:
        raise InvalidRequest("'id' must be a string or an integer")
    if len(str(value)) > MAX_CLIENT_ID_CHARS or value == "":
        raise InvalidRequest(f"'id' must be 1-{MAX_CLIENT_ID_CHARS} characters")
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise InvalidRequest("'id' must not contain NUL characters")
    return value


def _subscribe(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return Subscribe(a, r, _string(f, "topic_name"))


def _unsubscribe(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return Unsubscribe(a, r, _string(f, "topic_name"))


def _create(a: str, r: Ref, f: dict[str, Any]) -> Action:
    is_private = f.get("is_private", False)
    if not isinstance(is_private, bool):
        raise InvalidRequest("'is_private' must be true or false")
    return Create(a, r, _string(f, "topic_name"), is_private)


def _invite(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return Invite(a, r, _string(f, "topic_name"), _string(f, "username"))


def _publish(a: str, r: Ref, f: dict[str, Any]) -> Action:
    topic_name = _string(f, "topic_name")
    if "content" not in f:
        raise InvalidRequest("'content' is required")
    try:
        content = orjson.dumps(f["content"]).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes
        raise InvalidRequest(f"'content' cannot be stored: {exc}") from exc
    return Publish(a, r, topic_name, content, _client_id(f))


def _list_topics(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return ListTopics(a, r)


def _history(a: str, r: Ref, f: dict[str, Any]) -> Action:
    limit = _optional_int(f, "limit", minimum=1)
    limit = HISTORY_DEFAULT_LIMIT if limit is None else min(limit, HISTORY_MAX_LIMIT)
    return History(
        a, r, _string(f, "topic_name"), _optional_int(f, "before"), _optional_int(f, "since"), limit
    )


def _ack(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return Ack(a, r, _string(f, "topic_name"), _required_int(f, "seq"))


def _ping(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return Ping(a, r)


def _disconnect(a: str, r: Ref, f: dict[str, Any]) -> Action:
    return Disconnect(a, r)


PARSERS: dict[str, Callable[[str, Ref, dict[str, Any]], Action]] = {
    "subscribe": _subscribe,
    "suscribe": _subscribe,  # the seed's spelling, kept for its clients
    "unsubscribe": _unsubscribe,
    "create": _create,
    "invite": _invite,
    "message": _publish,
    "list_topics": _list_topics,
    "history": _history,
    "ack": _ack,
    "ping": _ping,
    "disconnect": _disconnect,
}


def decode_action(text: str | bytes) -> Action | BadFrame:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return BadFrame(InvalidJson())
    if type(frame) is not dict:
        return BadFrame(InvalidRequest("a frame must be a JSON object"))
    action = frame.get("action")
    # Replies carry the ref, and topic_name where the request did, even when the rest of
    # the frame is bad (PROTOCOL.md, "Frames"): ``_named`` finds it for those replies.
    try:
        ref = _ref(frame)
    except TopicHubError as exc:
        known = action[:MAX_NAME_CHARS] if type(action) is str else None
        return BadFrame(exc, known, None, _named(frame))
    if type(action) is not str:
        return BadFrame(InvalidRequest("'action' must be a string"), None, ref, _named(frame))
    parser = PARSERS.get(action)
    if parser is None:
        return BadFrame(
            UnknownAction(f"unknown action {action[:64]!r}"), action[:64], ref, _named(frame)
        )
    try:
        return parser(action, ref, frame)
    except TopicHubError as exc:
        return BadFrame(exc, action, ref, _named(frame))


def _named(frame: dict[str, Any]) -> str | None:
    named = frame.get("topic_name")
    return named if type(named) is str else None
