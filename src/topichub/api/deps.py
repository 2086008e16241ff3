"""What route handlers depend on: the node's services and the caller's identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from topichub.errors import Unauthorized
from topichub.models import User
from topichub.observability import Metrics
from topichub.services import Services


@dataclass(frozen=True, slots=True)
class ApiContext:
    services: Services
    metrics: Metrics
    token_ttl: int
    is_live: Callable[[], bool]
    readiness: Callable[[], Awaitable[dict[str, str]]]
    ws_port: int = 0  # the WebSocket gateway's port, for GET /api/v1/info


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


Context = Annotated[ApiContext, Depends(context)]

_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/token")


async def current_user(
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise Unauthorized("send Authorization: Bearer <token>")
    return await ctx.services.users.principal(credentials.credentials)


CurrentUser = Annotated[User, Depends(current_user)]
