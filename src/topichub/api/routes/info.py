"""What a client needs to know before it connects (the web console uses it)."""

from __future__ import annotations

from fastapi import APIRouter

from topichub import __version__
from topichub.api.deps import Context
from topichub.api.schemas import InfoOut

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get("/info")
async def info(ctx: Context) -> InfoOut:
    """The server's version and the WebSocket gateway's port (no token needed)."""
    return InfoOut(version=__version__, ws_port=ctx.ws_port)
