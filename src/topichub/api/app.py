"""The REST application: routes, the error translation, local API docs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path

from topichub import __version__
from topichub.api.deps import ApiContext
from topichub.api.routes import admin, health, info, messages, topics, users
from topichub.errors import TopicHubError

log = logging.getLogger(__name__)

# The web console: plain HTML, CSS and JavaScript modules shipped in the package.
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# The console loads nothing but its own files and talks only to this server's REST API and
# its WebSocket gateway (on another port, hence ws: and wss:). No inline script may run.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _ConsoleFiles(StaticFiles):
    """The console's files, revalidated on every load so an upgrade is never half-cached."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(CONSOLE_HEADERS)
        return response


HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "already_exists",
    413: "too_large",
    415: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
}


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="topichub",
        version=__version__,
        description="REST API of topichub. The WebSocket protocol is in docs/protocol.md.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    for router in (
        users.router,
        topics.router,
        messages.router,
        admin.router,
        info.router,
        health.router,
    ):
        app.include_router(router)
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    app.mount("/console", _ConsoleFiles(directory=str(WEB_DIR)), name="console")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # Served from the swagger-ui-bundle package: works with no network.
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="topichub API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
            # Swagger UI's default validator badge would fetch validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/", include_in_schema=False)
    async def console() -> HTMLResponse:
        """The web console (docs/protocol.md, "Web console")."""
        page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers=CONSOLE_HEADERS)

    @app.exception_handler(TopicHubError)
    async def topichub_error(request: Request, error: TopicHubError) -> JSONResponse:
        context.metrics.error(
            error.code, error.message, f"rest {request.method} {request.url.path}"
        )
        return JSONResponse(
            {"error": error.code, "message": error.message}, status_code=error.http_status
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return JSONResponse(
                {"error": "invalid_request", "message": "the body is not valid JSON"},
                status_code=400,
            )
        first = problems[0] if problems else {}
        raw = first.get("input")
        if tuple(first.get("loc", ())) == ("body",) and isinstance(raw, bytes):
            # A body sent without a JSON content type reaches validation as raw bytes.
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError:
                return JSONResponse(
                    {"error": "invalid_request", "message": "the body is not valid JSON"},
                    status_code=400,
                )
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "message": "send JSON (Content-Type: application/json)",
                },
                status_code=422,
            )
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return JSONResponse({"error": "invalid_request", "message": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "error")
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            # Starlette names only the methods of the first route matching the path; a
            # path served by several routes (GET and POST /topics) supports all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return JSONResponse(
            {"error": code, "message": str(error.detail)},
            status_code=error.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=error)
        return JSONResponse(
            {"error": "internal_error", "message": "internal error"}, status_code=500
        )

    return app


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
