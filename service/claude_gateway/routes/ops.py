"""`/metrics`: the Prometheus exposition, summed over every worker process of the pod."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from claude_gateway import metrics

router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    # Multiprocess mode reads every worker's files: off the event loop.
    body = await asyncio.to_thread(metrics.render)
    return Response(body, media_type=metrics.CONTENT_TYPE)
