"""`/analyze`: long document jobs, run by the ARQ workers (or in-process without Redis)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request

from claude_gateway.context import request_context
from claude_gateway.deps import Client, Jobs
from claude_gateway.errors import InvalidRequest, NotFound
from claude_gateway.jobs import JobView
from claude_gateway.jobs.interface import check_document
from claude_gateway.jobs.spend import JobSpend, plan
from claude_gateway.models import AnalyzeRequest, ErrorDetail, TaskAccepted, TaskStatus
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.responses import JSONResponse
from claude_gateway.settings import Settings

IDEMPOTENCY_KEY_MAX_CHARS = 255
# Task ids are uuid4 hex; anything else cannot be a task, so it is a 404 without a Redis round trip.
TaskId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]

router = APIRouter(tags=["jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorDetail} for status in (400, 401, 403, 404, 413, 429)}


def _view(job: JobView) -> dict[str, Any]:
    return TaskStatus(task_id=job.task_id, status=job.status, result=job.result, error=job.error).model_dump(
        exclude_none=True
    )


@router.post("/analyze", status_code=202, response_model=TaskAccepted, responses=_ERRORS)
async def submit(
    request: Request,
    body: AnalyzeRequest,
    client: Client,
    jobs: Jobs,
    idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX_CHARS)] = None,
) -> JSONResponse:
    """Queue a document for summarising; poll `GET /analyze/{task_id}` for the result.

    The job's planned calls are reserved against the key's request, token and budget limits now, in one step (429
    at once when they cannot fit), and settled to what the job spent when it ends."""
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidRequest("Idempotency-Key must not be blank")
    settings: Settings = request.state.settings
    limiter: RateLimiter = request.state.limiter
    check_document(body.document, settings)
    planned = plan(body.document, settings.default_model, settings.token_reserve_output)
    admission = await limiter.acquire(
        client.name,
        requests=client.request_limits,
        tokens=client.token_limits,
        cost=planned.tokens if client.token_limits else 0,
        budget=client.budget,
        spend=planned.spend_micro_usd() if client.budget.limited else 0,
    )
    request_context(request).extra_headers.update(admission.headers.as_headers())
    spend = JobSpend(limiter, admission.reservation, planned.model)
    try:
        job = await jobs.submit(
            client=client.name, document=body.document, idempotency_key=idempotency_key, spend=spend
        )
    except BaseException:
        await spend.refund()  # nothing was queued (a no-op when the queue gave it back already)
        raise
    return JSONResponse({"task_id": job.task_id, "status": "processing"}, status_code=202)


@router.get("/analyze/{task_id}", response_model=TaskStatus, responses=_ERRORS)
async def status(task_id: TaskId, client: Client, jobs: Jobs) -> JSONResponse:
    """A task's status, and its result or error once it has one. Another client's task is a 404."""
    job = await jobs.get(client=client.name, task_id=task_id)
    if job is None:
        raise NotFound("Task not found")
    return JSONResponse(_view(job))


@router.delete("/analyze/{task_id}", responses=_ERRORS)
async def cancel(request: Request, task_id: TaskId, client: Client, jobs: Jobs) -> JSONResponse:
    """Cancel a queued or running task of this client."""
    if not await jobs.cancel(client=client.name, task_id=task_id, limiter=request.state.limiter):
        raise NotFound("Task not found")
    return JSONResponse({"task_id": task_id, "status": "cancelled"})
