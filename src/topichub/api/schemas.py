"""Request and response bodies of the REST API (validated at the edge)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from topichub.errors import InvalidRequest
from topichub.models import MessageRecord, User
from topichub.wire.events import format_timestamp, view_name

# PROTOCOL.md "Names", in the OpenAPI schema too (the services check them again).
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Name
    password: str = Field(min_length=8, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class UserOut(BaseModel):
    username: str
    is_admin: bool
    created_at: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            is_admin=user.is_admin,
            created_at=format_timestamp(user.created_at_ms),
        )


class TopicIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic_name: Name
    # true or false only, as on the WebSocket (wire.codec): pydantic's lax bool would take
    # 1, 1.0 and "yes" as true
    is_private: StrictBool = False


class TopicSummaryOut(BaseModel):
    topic_name: str
    is_private: bool
    owner: str | None
    members: int
    member: bool


class MemberOut(BaseModel):
    username: str
    role: str


class TopicOut(BaseModel):
    topic_name: str
    is_private: bool
    owner: str | None
    last_seq: int
    created_at: str
    members: list[MemberOut]


class MembershipOut(BaseModel):
    topic_name: str
    username: str


# The same bounds as the WebSocket ``message`` action's ``id`` (wire.codec).
ClientId = (
    Annotated[str, Field(strict=True, min_length=1, max_length=64, pattern=r"^[^\x00]+$")]
    | Annotated[int, Field(strict=True, ge=-(2**63), le=2**64 - 1)]
    | None
)


class PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: Any = Field(description="any JSON value (integers must fit in 64 bits)")
    id: ClientId = Field(
        default=None, description="client message id: a retry with the same id is not stored twice"
    )

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_a_string_or_an_integer(cls, value: Any) -> Any:
        # As on the WebSocket (wire.codec): no booleans, no floats, not even 2.0.
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ValueError("must be a string of 1-64 characters or an integer")
        return value

    def content_json(self) -> str:
        try:
            return orjson.dumps(self.content).decode()
        except orjson.JSONEncodeError as exc:  # an integer over 64 bits, or nested too deep
            raise InvalidRequest(f"content cannot be stored as JSON: {exc}") from exc


class PublishOut(BaseModel):
    topic_name: str
    seq: int
    id: str | int | None = None
    duplicate: bool = False


class MessageOut(BaseModel):
    event: str = "message"
    topic_name: str
    from_: str = Field(alias="from", serialization_alias="from")
    content: Any
    seq: int
    sent_at: str
    direct: bool
    pending: bool

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, record: MessageRecord, viewer: str, *, pending: bool) -> MessageOut:
        import orjson

        return cls.model_validate(
            {
                "topic_name": view_name(record, viewer),
                "from": record.sender,
                "content": orjson.loads(record.content),
                "seq": record.seq,
                "sent_at": format_timestamp(record.sent_at_ms),
                "direct": record.direct_pair is not None,
                "pending": pending,
            }
        )


class MessagesOut(BaseModel):
    topic_name: str | None = None
    messages: list[MessageOut]


class ErrorOut(BaseModel):
    error: str
    message: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route may answer with."""
    return {status: {"model": ErrorOut} for status in statuses}


ERRORS = error_responses(400, 401, 403, 404, 409, 422)
PUBLISH_ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429)


class StatusOut(BaseModel):
    status: str
    checks: dict[str, str] = {}


class InfoOut(BaseModel):
    version: str = Field(description="the server's topichub version")
    ws_port: int = Field(
        description="the WebSocket gateway's port: connect to ws://<this host>:<ws_port>/<token>"
    )


class ConversationOut(BaseModel):
    username: str = Field(description="the other user of the direct conversation")
    last_seq: int = Field(description="seq of its newest message")


class NodeOut(BaseModel):
    node_id: str
    ws_address: str
    api_address: str
    version: str
    started_at: str
    seen_at: str = Field(description="its last heartbeat (every 5 s)")
    connections: int
    users: int = Field(description="distinct users with an open connection on the node")


class TopicStatsOut(BaseModel):
    topic_name: str
    is_private: bool
    owner: str | None
    members: int
    last_seq: int
    messages_last_minute: int


class BacklogOut(BaseModel):
    username: str
    messages: int = Field(description="pending messages: past the user's cursors, not their own")
    topics: int = Field(description="topics and direct conversations they are pending in")


class ErrorNoteOut(BaseModel):
    at: str
    code: str
    message: str
    source: str = Field(description="'ws <action>', 'ws handshake' or 'rest <METHOD> <path>'")


class AdminStatsOut(BaseModel):
    node_id: str = Field(description="the node that answered (metrics and errors are its own)")
    generated_at: str
    connections: int = Field(description="open WebSocket connections, all live nodes together")
    nodes: list[NodeOut] = Field(description="nodes with a heartbeat in the last 15 s")
    metrics: dict[str, float] = Field(
        description="this node's /metrics samples by name, without the topichub_ prefix"
    )
    errors_by_code: dict[str, float] = Field(description="this node's topichub_errors by code")
    recent_errors: list[ErrorNoteOut] = Field(description="this node's last 50, newest first")
    topics: list[TopicStatsOut] = Field(description="public and private topics, by name")
    pending: list[BacklogOut] = Field(description="users with pending messages, largest first")
