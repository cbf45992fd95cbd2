"""`/metrics`: the Prometheus exposition, summed over every worker process of the pod; on METRICS_PORT only (`ops_port`)."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter
from fastapi.responses import Response

from claude_gateway.jobs import JobsUnavailable
from claude_gateway.telemetry import metrics
from claude_gateway.web.deps import Jobs

router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(jobs: Jobs) -> Response:
    # The queue depth is sampled at scrape time: one cheap Redis call per scrape, none per request.
    with contextlib.suppress(JobsUnavailable):
        await jobs.queued()
    # Multiprocess mode reads every worker's files: off the event loop.
    body = await asyncio.to_thread(metrics.render)
    return Response(body, media_type=metrics.CONTENT_TYPE)
