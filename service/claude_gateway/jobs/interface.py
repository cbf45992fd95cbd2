"""What the API sees of background jobs: `JobQueue`, the `JobView` it answers with, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from claude_gateway.errors import InvalidRequest, Overloaded, PayloadTooLarge
from claude_gateway.jobs.constants import JOBS_UNAVAILABLE_RETRY_AFTER_S
from claude_gateway.settings import Settings

if TYPE_CHECKING:
    from claude_gateway.jobs.spend import JobSpend
    from claude_gateway.ratelimit import RateLimiter

JobStatus = Literal["processing", "complete", "failed"]


@dataclass(frozen=True, slots=True)
class JobView:
    """A task as its client sees it: `result` once complete, `error` (ours, clean) once failed."""

    task_id: str
    status: JobStatus
    result: str | None = None
    error: str | None = None


class JobQueue(Protocol):
    async def submit(
        self, *, client: str, document: str, idempotency_key: str | None, spend: JobSpend | None = None
    ) -> JobView:
        """Queue a summary of `document` for `client`; the same `idempotency_key` returns the same task (and
        `spend`, what this submission reserved, is given back). The job settles `spend` when it ends."""
        ...

    async def get(self, *, client: str, task_id: str) -> JobView | None:
        """The task, or None when it is unknown, expired, or another client's."""
        ...

    async def cancel(self, *, client: str, task_id: str, limiter: RateLimiter | None = None) -> bool:
        """Cancel a queued or running task; False when it is unknown, another client's, or already finished. A task
        cancelled before it ever ran gives back what it reserved through `limiter`."""
        ...

    async def queued(self) -> int:
        """Jobs not finished yet (waiting, deferred for a retry, or running); also sets `claude_gateway_jobs_queued`."""
        ...

    async def ping(self) -> bool:
        """True when the queue can take jobs (Redis answers)."""
        ...

    async def aclose(self) -> None: ...


class JobsUnavailable(Overloaded):
    """The job store (Redis) did not answer: nothing was queued or read."""

    default_message = "Background jobs are unavailable right now. Try again shortly."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(JOBS_UNAVAILABLE_RETRY_AFTER_S)})


def check_document(document: str, settings: Settings) -> None:
    """Refuse a document before anything is queued: 413 when too long, 400 when blank."""
    if len(document) > settings.max_document_chars:
        raise PayloadTooLarge(f"Document longer than {settings.max_document_chars} characters")
    if not document.strip():
        raise InvalidRequest("Document is empty")
