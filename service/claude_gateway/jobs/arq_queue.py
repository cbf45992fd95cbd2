"""The API side of ARQ jobs: enqueue, read, cancel. Every API process and pod shares them through Redis.

Where a task stands comes from ARQ's keys, read in this order:
- its result (`arq:result:<job>`, kept JOB_RESULT_TTL_S): `result_info().success` says complete or failed. ARQ
  calls a failed job "complete" too, so `Job.status()` alone never decides;
- otherwise `Job.status()`: queued, deferred (waiting for a retry) or in progress are all "processing";
  not found is an unknown (or expired, or another client's) task.
The API keeps no state of its own, so it can restart, or run in many pods, while jobs run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import DeserializationError, Job, JobStatus, SerializationError
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from claude_gateway.admission.ratelimit import RateLimiter
from claude_gateway.errors import InvalidRequest
from claude_gateway.jobs import redis_pipeline
from claude_gateway.jobs.codec import JobFailed, deserialize, failure_of, serialize
from claude_gateway.jobs.constants import (
    CANCEL_POLL_S,
    CANCEL_WAIT_S,
    JOB_EXPIRES_S,
    JOB_FUNCTION,
    QUEUE_NAME,
)
from claude_gateway.jobs.interface import JobsUnavailable, JobView, check_document
from claude_gateway.jobs.keys import job_id, new_task_id, parts_key
from claude_gateway.jobs.queued_bytes import RedisQueuedBytes, document_bytes
from claude_gateway.jobs.spend import JobSpend, refund_unstarted
from claude_gateway.jobs.summarise import RedisParts
from claude_gateway.settings import Settings
from claude_gateway.telemetry import metrics, tracing

# How the API process's connections are named in Redis's CLIENT LIST: an operator can tell them from the workers'.
API_CLIENT_NAME = "claude-gateway-api"


def connect(settings: Settings, *, timeout_s: float | None = None, client_name: str | None = None) -> ArqRedis:
    """An ARQ Redis client for `REDIS_URL`, storing jobs as JSON (see `codec`); connects on first use.

    In the API process this is the one client (and connection pool) for jobs and rate limits alike, built by the app's
    lifespan. One pool serves both because both want the same socket timeouts, REDIS_TIMEOUT_S: ARQ's API side sends
    short commands only (no blocking reads), and the limiter bounds each of its calls by REDIS_TIMEOUT_S with
    asyncio's timeout besides; a read cut short that way closes its connection (redis-py drops a connection whose
    reply was not read), so no caller is ever lent a connection with someone else's reply pending.
    """
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set")
    redis_pipeline.install()
    timeout = settings.redis_timeout_s if timeout_s is None else timeout_s
    pool = ConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        client_name=client_name,
    )
    return ArqRedis(
        pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
    )


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Count a failed or timed-out Redis call and answer 503 (`JobsUnavailable`) instead of a 500."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        metrics.REDIS_ERRORS.labels(operation="jobs").inc()
        metrics.REDIS_UP.set(0)
        raise JobsUnavailable() from exc
    metrics.REDIS_UP.set(1)


class ArqJobQueue:
    """`JobQueue` on ARQ: jobs run in `claude-gateway worker` processes."""

    def __init__(self, settings: Settings, *, redis: ArqRedis | None = None) -> None:
        self._settings = settings
        self._owns_redis = redis is None
        self._redis = redis if redis is not None else connect(settings)
        self._queued_bytes = RedisQueuedBytes(self._redis, settings.jobs_max_queued_bytes_per_client)

    def _job(self, client: str, task_id: str) -> Job:
        return Job(job_id(client, task_id), self._redis, _queue_name=QUEUE_NAME, _deserializer=deserialize)

    async def submit(
        self, *, client: str, document: str, idempotency_key: str | None, spend: JobSpend | None = None
    ) -> JobView:
        check_document(document, self._settings)
        task_id = new_task_id(client, idempotency_key)
        job_key = job_id(client, task_id)
        # Only when there is one: a job without it still runs on a worker of an earlier release.
        wire = spend.to_wire() if spend is not None else None
        extra: dict[str, Any] = {"reservation": wire} if wire is not None else {}
        with _redis_errors():
            # The client's allowance first (429 past it): reserved here, given back when the job ends.
            reserved = await self._queued_bytes.reserve(job_key, document_bytes(document))
            try:
                job = await self._redis.enqueue_job(
                    JOB_FUNCTION,
                    task_id,
                    document,
                    _job_id=job_key,
                    _queue_name=QUEUE_NAME,
                    _expires=JOB_EXPIRES_S,
                    client=client,
                    trace_context=tracing.inject_context(),
                    **extra,
                )
            except SerializationError:  # text JSON cannot carry, such as a lone surrogate
                await self._unreserve(job_key, reserved)
                raise InvalidRequest("Document is not valid Unicode text") from None
            except BaseException:
                await self._unreserve(job_key, reserved)
                raise
            if job is None:  # ARQ keeps one job per id: this Idempotency-Key's task exists (or ended) already
                await self._unreserve(job_key, reserved)
        if job is None:
            if spend is not None:
                await spend.refund()
            return await self.get(client=client, task_id=task_id) or JobView(task_id, "processing")
        metrics.JOBS.labels(status="enqueued").inc()
        return JobView(task_id, "processing")

    async def get(self, *, client: str, task_id: str) -> JobView | None:
        job = self._job(client, task_id)
        with _redis_errors():
            try:
                info = await job.result_info()
            except DeserializationError:
                return JobView(task_id, "failed", error=JobFailed(kind="internal").message)
            if info is None:
                status = await job.status()
        if info is not None:
            if info.success:
                return JobView(task_id, "complete", result=_summary(info.result))
            return JobView(task_id, "failed", error=failure_of(info.result).message)
        if status == JobStatus.not_found:
            return None
        return JobView(task_id, "processing")

    async def cancel(self, *, client: str, task_id: str, limiter: RateLimiter | None = None) -> bool:
        """ARQ's abort: a queued job is dropped when a worker next looks at it, a running one is cancelled.

        Waits up to CANCEL_WAIT_S for a worker to act. If none does (all busy or down), the abort stays pending
        and is applied when a worker next polls: the task is still reported cancelled-to-be (True). A job the abort
        stopped before it ever ran gives its reservation back here (one that ran settles it in the worker).
        """
        job = self._job(client, task_id)
        with _redis_errors():
            if await job.result_info() is not None or await job.status() == JobStatus.not_found:
                return False
            definition = await job.info()  # its arguments, its reservation among them (a result drops them)
            try:
                aborted = await job.abort(timeout=CANCEL_WAIT_S, poll_delay=CANCEL_POLL_S)
            except TimeoutError:
                return True
            except JobFailed:  # it failed by itself before the abort landed
                return False
            # The abort has landed, so the job has ended: its queued bytes come back now (else at the client's cap).
            await self._queued_bytes.release_if_ended(job.job_id)
        if aborted and limiter is not None and definition is not None:
            parts = RedisParts(self._redis, parts_key(job_id(client, task_id)))
            await refund_unstarted(limiter, definition.kwargs.get("reservation"), parts)
        return aborted

    async def _unreserve(self, job_key: str, reserved: bool) -> None:
        """Give back a reservation whose job was not enqueued; if Redis fails here, the cap's reconciliation does."""
        if reserved:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._queued_bytes.release(job_key)

    async def queued(self) -> int:
        with _redis_errors():
            depth = int(await self._redis.zcard(QUEUE_NAME))
        metrics.JOBS_QUEUED.set(depth)
        return depth

    async def ping(self) -> bool:
        try:
            with _redis_errors():
                await self._redis.ping()
        except JobsUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        if self._owns_redis:
            await self._redis.aclose(close_connection_pool=True)


def _summary(result: Any) -> str | None:
    if isinstance(result, dict):
        summary = result.get("summary")
        return summary if isinstance(summary, str) else None
    return None
