"""Registration, users and tokens."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, status
from pydantic import ValidationError

from topichub.api.deps import Context, CurrentUser
from topichub.api.schemas import ERRORS, Credentials, Registration, TokenOut, UserOut
from topichub.errors import InvalidRequest, MalformedBody

router = APIRouter(prefix="/api/v1", tags=["users and tokens"])


@router.post("/users", status_code=status.HTTP_201_CREATED, responses=ERRORS)
async def register(body: Registration, ctx: Context) -> UserOut:
    """Register a user; 409 if the name is taken by a user or a topic."""
    return UserOut.of(await ctx.services.users.register(body.username, body.password))


@router.get("/users", responses=ERRORS)
async def list_users(ctx: Context, _: CurrentUser) -> list[UserOut]:
    return [UserOut.of(user) for user in await ctx.services.users.list()]


@router.delete("/users/{username}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def delete_user(username: str, ctx: Context, actor: CurrentUser) -> None:
    """Delete an account (yourself, or anyone as an admin); its connections are closed."""
    await ctx.services.users.delete(actor, username)


async def _issue(ctx: Context, username: str, password: str) -> TokenOut:
    user = await ctx.services.users.authenticate(username, password)
    return TokenOut(access_token=ctx.services.users.issue_token(user), expires_in=ctx.token_ttl)


_TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": Credentials.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "minLength": 1, "maxLength": 64},
                        "password": {"type": "string", "minLength": 1, "maxLength": 1024},
                    },
                }
            },
        },
    }
}


@router.post("/token", responses=ERRORS, openapi_extra=_TOKEN_BODY)
async def token(request: Request, ctx: Context) -> TokenOut:
    """A token for username and password, as JSON or as an OAuth2 password form."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/x-www-form-urlencoded") or content_type.startswith(
            "multipart/form-data"
        ):
            form = await request.form()
            data = {key: form.get(key) for key in ("username", "password")}
        else:
            try:
                data = orjson.loads(await request.body())
            except orjson.JSONDecodeError as exc:
                raise MalformedBody() from exc
        if not isinstance(data, dict):
            raise InvalidRequest('send {"username": ..., "password": ...}')
        credentials = Credentials.model_validate(
            {k: v for k, v in data.items() if k in ("username", "password")}
        )
    except ValidationError as exc:
        raise InvalidRequest("username and password are required strings") from exc
    return await _issue(ctx, credentials.username, credentials.password)


@router.get("/token", responses=ERRORS)
async def token_from_query(
    ctx: Context,
    user: Annotated[str, Query(min_length=1, max_length=64)],
    password: Annotated[str, Query(min_length=1, max_length=1024)],
) -> TokenOut:
    """The seed's form: ``GET /api/v1/token?user=U&password=P``."""
    return await _issue(ctx, user, password)
