"""Background jobs: `POST /analyze` summarises a document out of band; `GET /analyze/{task_id}` reads the outcome.

The API sees one small interface, so that ARQ (in maintenance mode, pinning redis<6) stays behind it:

    @dataclass(frozen=True)
    class JobView:
        task_id: str
        status: Literal["processing", "complete", "failed"]
        result: str | None = None      # the summary, once complete
        error: str | None = None       # our clean message, once failed (never upstream text or a trace)

    class JobQueue(Protocol):
        async def submit(self, *, client: str, document: str, idempotency_key: str | None) -> JobView
            # 413 PayloadTooLarge above MAX_DOCUMENT_CHARS and 400 on a blank document, before anything is queued;
            # the same (client, Idempotency-Key) returns the same task; 503 JobsUnavailable when Redis is down
        async def get(self, *, client: str, task_id: str) -> JobView | None      # None: unknown, expired, another client's
        async def cancel(self, *, client: str, task_id: str) -> bool              # False: unknown / another client's / finished
        async def queued(self) -> int                                             # not finished yet; sets claude_gateway_jobs_queued
        async def ping(self) -> bool
        async def aclose(self) -> None

    def create_job_queue(settings: Settings, upstream: UpstreamClient, *, redis: ArqRedis | None = None) -> JobQueue
        # ArqJobQueue with REDIS_URL (jobs run by `claude-gateway worker`), else InProcessJobQueue (asyncio tasks of
        # this process; a warning says it holds for one process only)

The worker side (`claude_gateway.jobs.worker`): `worker_settings(settings)` (ARQ WorkerSettings), `run_worker(settings)`
(`claude-gateway worker`); `jobs.heartbeat.check_worker(settings) -> int` (`claude-gateway worker --check`, the
liveness probe, on a local heartbeat file); `jobs.in_progress` (a running job's in-progress mark held as a lease).

A job summarises its document with `settings.default_model`: in one call up to CHUNK_CHARS, else chunk by chunk and
then the chunk summaries (`summarise`), each call made once through the process's `UpstreamClient`. A failure its
retry policy would retry (429, 529, 5xx, unreachable, timeout...) runs the job again after the policy's wait
(Anthropic's `retry-after`, else its backoff), up to JOB_MAX_TRIES tries; anything else fails the task with a clean
message.
Results are kept JOB_RESULT_TTL_S. Each try is an `analyze_document` span in the trace of the request that queued it,
with the `chat {model}` spans of its upstream calls inside. Counted in `claude_gateway_jobs_total{status}`
(enqueued, complete, failed, retried) and `claude_gateway_job_duration_seconds` (each try's run time).

The package imports its queues lazily: `claude-gateway worker --check` (`jobs.heartbeat`), an exec probe run every
few seconds, must not pay for importing ARQ, redis-py and the Anthropic types it does not use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from claude_gateway.jobs.interface import JobQueue, JobsUnavailable, JobView

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from claude_gateway.jobs.arq_queue import ArqJobQueue
    from claude_gateway.jobs.codec import JobFailed
    from claude_gateway.jobs.inprocess import InProcessJobQueue
    from claude_gateway.settings import Settings
    from claude_gateway.upstream.client import UpstreamClient

__all__ = [
    "ArqJobQueue",
    "InProcessJobQueue",
    "JobFailed",
    "JobQueue",
    "JobView",
    "JobsUnavailable",
    "create_job_queue",
]

logger = logging.getLogger("claude_gateway.jobs")


def __getattr__(name: str) -> Any:
    if name == "ArqJobQueue":
        from claude_gateway.jobs.arq_queue import ArqJobQueue

        return ArqJobQueue
    if name == "InProcessJobQueue":
        from claude_gateway.jobs.inprocess import InProcessJobQueue

        return InProcessJobQueue
    if name == "JobFailed":
        from claude_gateway.jobs.codec import JobFailed

        return JobFailed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_job_queue(settings: Settings, upstream: UpstreamClient, *, redis: ArqRedis | None = None) -> JobQueue:
    """The job queue for these settings: shared through Redis when REDIS_URL is set, else in this process.

    `redis`: the process's client for REDIS_URL (`arq_queue.connect`), which the queue then uses and does not close.
    """
    if settings.redis_url is not None:
        from claude_gateway.jobs.arq_queue import ArqJobQueue

        return ArqJobQueue(settings, redis=redis)
    from claude_gateway.jobs.inprocess import InProcessJobQueue

    logger.warning(
        "REDIS_URL is not set: /analyze jobs run inside this process; they are visible to this process only "
        "and lost when it stops (run one worker process, or set REDIS_URL and run `claude-gateway worker`)"
    )
    return InProcessJobQueue(settings, upstream)
