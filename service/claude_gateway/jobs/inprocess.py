"""Jobs without Redis: asyncio tasks in the API process, behind the same `JobQueue`.

For `make run` and single-process deployments only: tasks live in this process's memory, so another worker process
or pod does not see them and a restart loses them (`create_job_queue` logs a warning saying so). Otherwise they
behave as ARQ jobs do: the same tries, retry waits, result TTL, idempotency, isolation and cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from claude_gateway.admission.ratelimit import RateLimiter
from claude_gateway.jobs.attempt import RetryLater, run_attempt
from claude_gateway.jobs.codec import MESSAGES, JobFailed, describe_failure
from claude_gateway.jobs.constants import IN_PROCESS_MAX_JOBS, IN_PROCESS_SWEEP_INTERVAL_S
from claude_gateway.jobs.interface import JobStatus, JobView, check_document
from claude_gateway.jobs.keys import job_id, new_task_id
from claude_gateway.jobs.queued_bytes import MemoryQueuedBytes, document_bytes
from claude_gateway.jobs.spend import JobSpend
from claude_gateway.jobs.summarise import MemoryParts
from claude_gateway.jobs.timeouts import job_timeout_s
from claude_gateway.settings import Settings
from claude_gateway.telemetry import metrics, tracing
from claude_gateway.upstream.client import UpstreamClient

logger = logging.getLogger("claude_gateway.jobs")


@dataclass(slots=True)
class _Task:
    task_id: str
    status: JobStatus = "processing"
    result: str | None = None
    error: str | None = None
    finished_at: float | None = None  # time.monotonic()
    cancelled: bool = False
    runner: asyncio.Task[None] | None = field(default=None, repr=False)
    client: str = ""
    size: int = 0  # bytes counted against the client's allowance until the task ends

    def view(self) -> JobView:
        return JobView(self.task_id, self.status, result=self.result, error=self.error)


class InProcessJobQueue:
    """`JobQueue` on asyncio tasks of this process."""

    def __init__(
        self,
        settings: Settings,
        upstream: UpstreamClient,
        *,
        max_jobs: int = IN_PROCESS_MAX_JOBS,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._slots = asyncio.Semaphore(max_jobs)
        self._tasks: dict[str, _Task] = {}
        self._queued_bytes = MemoryQueuedBytes(settings.jobs_max_queued_bytes_per_client)
        # Refunds of jobs cancelled before they started, under way (a reference keeps each alive until done).
        self._refunds: set[asyncio.Future[None]] = set()
        self._last_sweep = time.monotonic()

    async def submit(
        self, *, client: str, document: str, idempotency_key: str | None, spend: JobSpend | None = None
    ) -> JobView:
        check_document(document, self._settings)
        self._sweep()
        task_id = new_task_id(client, idempotency_key)
        key = job_id(client, task_id)
        existing = self._live(key)
        if existing is not None:
            if spend is not None:
                await spend.refund()
            return existing.view()
        size = document_bytes(document)
        self._queued_bytes.reserve(client, size)
        task = _Task(task_id, client=client, size=size)
        self._tasks[key] = task
        task.runner = asyncio.create_task(
            self._run(task, document, client=client, trace_context=tracing.inject_context(), spend=spend),
            name=f"claude-gateway job {task_id}",
        )
        task.runner.add_done_callback(lambda runner: self._settle(task, runner, spend))
        metrics.JOBS.labels(status="enqueued").inc()
        return task.view()

    async def get(self, *, client: str, task_id: str) -> JobView | None:
        task = self._live(job_id(client, task_id))
        return None if task is None else task.view()

    async def cancel(self, *, client: str, task_id: str, limiter: RateLimiter | None = None) -> bool:
        # The runner settles its own reservation however it ends (`limiter` is for ARQ jobs that never ran).
        task = self._live(job_id(client, task_id))
        if task is None or task.status != "processing" or task.runner is None:
            return False
        task.runner.cancel()
        await asyncio.wait([task.runner])  # the caller's own cancellation still propagates
        return task.cancelled

    async def queued(self) -> int:
        depth = sum(1 for task in self._tasks.values() if task.status == "processing")
        metrics.JOBS_QUEUED.set(depth)
        return depth

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        runners = [task.runner for task in self._tasks.values() if task.runner is not None and not task.runner.done()]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    async def _run(
        self, task: _Task, document: str, *, client: str, trace_context: dict[str, str], spend: JobSpend | None
    ) -> None:
        """Every try of one job, as an ARQ worker would run them, ending in a result or a clean error, and its
        reservation settled to what it spent."""
        parts = MemoryParts()
        try:
            await self._tries(task, document, client=client, trace_context=trace_context, parts=parts)
        finally:
            if spend is not None:
                await asyncio.shield(spend.settle(parts, client=client))

    async def _tries(
        self, task: _Task, document: str, *, client: str, trace_context: dict[str, str], parts: MemoryParts
    ) -> None:
        max_tries = self._settings.job_max_tries
        try:
            async with self._slots:
                for attempt in range(1, max_tries + 1):
                    try:
                        async with asyncio.timeout(job_timeout_s(self._settings)):
                            result = await run_attempt(
                                self._upstream,
                                document,
                                client=client,
                                model=self._settings.default_model,
                                parts=parts,
                                attempt=attempt,
                                max_tries=max_tries,
                                trace_context=trace_context,
                            )
                    except RetryLater as retry:  # as ARQ's Retry(defer=...): the whole job again, after the wait
                        await asyncio.sleep(retry.defer_s)
                        continue
                    self._finish(task, "complete", result=str(result["summary"]))
                    return
            self._finish(task, "failed", error=MESSAGES["internal"])  # unreachable: the last try raises
        except asyncio.CancelledError:
            task.cancelled = True
            self._finish(task, "failed", error=MESSAGES["cancelled"])
            raise
        except Exception as exc:  # a JobFailed, a timeout, or a bug: the client gets our message only
            if not isinstance(exc, JobFailed):
                logger.exception("in-process job %s failed", task.task_id)
            self._finish(task, "failed", error=describe_failure(exc).message)

    def _settle(self, task: _Task, runner: asyncio.Task[None], spend: JobSpend | None) -> None:
        """A runner cancelled before it started never ran its own `except`: record the cancellation here, and give
        back what the job reserved."""
        if task.status == "processing":
            task.cancelled = runner.cancelled()
            self._finish(task, "failed", error=MESSAGES["cancelled" if task.cancelled else "internal"])
            if spend is not None:
                refund = asyncio.ensure_future(spend.refund())
                self._refunds.add(refund)
                refund.add_done_callback(self._refunds.discard)

    def _finish(self, task: _Task, status: JobStatus, *, result: str | None = None, error: str | None = None) -> None:
        task.status, task.result, task.error = status, result, error
        task.finished_at = time.monotonic()
        self._queued_bytes.release(task.client, task.size)
        task.size = 0

    def _live(self, key: str) -> _Task | None:
        task = self._tasks.get(key)
        if task is not None and self._expired(task, time.monotonic()):
            del self._tasks[key]
            return None
        return task

    def _expired(self, task: _Task, now: float) -> bool:
        return task.finished_at is not None and now - task.finished_at >= self._settings.job_result_ttl_s

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < IN_PROCESS_SWEEP_INTERVAL_S:
            return
        self._last_sweep = now
        for key in [key for key, task in self._tasks.items() if self._expired(task, now)]:
            del self._tasks[key]
