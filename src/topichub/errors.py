"""The one error table of topichub.

Every failure a client can see is a :class:`TopicHubError` subclass carrying its wire code
(PROTOCOL.md, "Client actions and their replies"), its HTTP status (PROTOCOL.md, "REST API")
and, where the failure ends a WebSocket connection, its close code. Only the two edges
(``gateway`` and ``api``) translate these into frames or responses::

    TopicHubError
    ├── InvalidJson          invalid_json       400
    ├── InvalidRequest       invalid_request    422
    │   └── MalformedBody    invalid_request    400
    ├── UnknownAction        unknown_action     422
    ├── Unauthorized         unauthorized       401
    ├── Forbidden            forbidden          403
    ├── NotAMember           not_a_member       403
    ├── NotFound             not_found          404
    ├── AlreadyExists        already_exists     409
    ├── AlreadyMember        already_member     409
    ├── TooLarge             too_large          413
    ├── RateLimited          rate_limited       429
    └── Unavailable          unavailable        503
"""

from __future__ import annotations

from typing import ClassVar


class TopicHubError(Exception):
    """Base of every client-visible error."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidJson(TopicHubError):
    code = "invalid_json"
    http_status = 400
    default_message = "the frame is not valid JSON"


class InvalidRequest(TopicHubError):
    code = "invalid_request"
    http_status = 422
    default_message = "the request is not valid"


class MalformedBody(InvalidRequest):
    """A REST body that is not JSON: ``invalid_request`` with 400 (PROTOCOL.md, "REST API")."""

    http_status = 400
    default_message = "the body is not valid JSON"


class UnknownAction(TopicHubError):
    code = "unknown_action"
    http_status = 422
    default_message = "unknown action"


class Unauthorized(TopicHubError):
    code = "unauthorized"
    http_status = 401
    default_message = "missing or invalid credentials"


class Forbidden(TopicHubError):
    code = "forbidden"
    http_status = 403
    default_message = "not allowed"


class NotAMember(TopicHubError):
    code = "not_a_member"
    http_status = 403
    default_message = "you are not a member of this topic"


class NotFound(TopicHubError):
    code = "not_found"
    http_status = 404
    default_message = "no such topic or user"


class AlreadyExists(TopicHubError):
    code = "already_exists"
    http_status = 409
    default_message = "that name is already taken"


class AlreadyMember(TopicHubError):
    code = "already_member"
    http_status = 409
    default_message = "already a member of this topic"


class TooLarge(TopicHubError):
    code = "too_large"
    http_status = 413
    default_message = "the message is too large"


class RateLimited(TopicHubError):
    code = "rate_limited"
    http_status = 429
    default_message = "too many messages, slow down"


class Unavailable(TopicHubError):
    code = "unavailable"
    http_status = 503
    default_message = "the server cannot serve this right now"


class CloseCode:
    """WebSocket close codes of PROTOCOL.md, "Close codes" (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
