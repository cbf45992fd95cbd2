"""`/health/live`, `/health/ready` and the deep `/health`."""

from __future__ import annotations

from fastapi import APIRouter

from claude_gateway.web.deps import Health
from claude_gateway.web.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """200 while the process serves; calls nothing outside."""
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(health: Health) -> JSONResponse:
    """200 when traffic should come here: not draining, and Redis answers if the fail mode needs it (`closed`);
    else 503. The body says how Redis is (`up`, `down`, `not_configured`) in either mode."""
    result = await health.ready()
    return JSONResponse(result.body, status_code=200 if result.healthy else 503)


@router.get("/health")
async def deep(health: Health) -> JSONResponse:
    """The deep check: a real call to `HEALTH_MODEL`, cached so that probes do not spend; on METRICS_PORT only."""
    result = await health.deep()
    return JSONResponse(result.body, status_code=200 if result.healthy else 503)
