"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from topichub.api.deps import Context
from topichub.api.schemas import StatusOut

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"model": StatusOut}})
async def healthz(ctx: Context) -> JSONResponse:
    """200 once the WebSocket gateway accepts connections too."""
    if ctx.is_live():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "starting"}, status_code=503)


@router.get("/readyz", responses={503: {"model": StatusOut}})
async def readyz(ctx: Context) -> JSONResponse:
    """200 when the store and the broker are reachable, else 503 naming what is not."""
    checks = await ctx.readiness()
    ok = all(value == "ok" for value in checks.values()) and ctx.is_live()
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
async def metrics(ctx: Context) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
