"""The ARQ worker: the `analyze_document` job, and the settings `claude-gateway worker` runs it with.

`worker_settings(settings)` is an ARQ WorkerSettings (as a dict, which ARQ accepts wherever it takes the class):
`run_worker` runs it until SIGTERM; tests run it with `arq.worker.Worker(**worker_settings(s), burst=True)`.

`run_worker` adds what ARQ's own runner lacks: a heartbeat file for the liveness probe (`heartbeat`), and riding out
a Redis outage (ARQ's poll loop ends at the first Redis error; we start it again once Redis answers, while the jobs
under way go on). Every worker, tests' included, holds its running jobs' in-progress marks as leases
(`in_progress`), so that a dead worker's job is run again within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry, Worker, create_worker, func
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError

from claude_gateway import pricing
from claude_gateway.jobs import heartbeat, in_progress, redis_pipeline, timeouts
from claude_gateway.jobs.attempt import RetryLater, run_attempt
from claude_gateway.jobs.codec import JobFailed, deserialize, serialize
from claude_gateway.jobs.constants import (
    HEALTH_CHECK_INTERVAL_S,
    JOB_FUNCTION,
    QUEUE_DEPTH_SAMPLE_S,
    QUEUE_NAME,
    REDIS_RETRY_S,
    WORKER_MAX_JOBS,
)
from claude_gateway.jobs.heartbeat import check_worker
from claude_gateway.jobs.keys import health_check_key, parts_key
from claude_gateway.jobs.queued_bytes import RedisQueuedBytes
from claude_gateway.jobs.spend import settle_worker_job
from claude_gateway.jobs.summarise import RedisParts
from claude_gateway.settings import Settings
from claude_gateway.telemetry import metrics, tracing
from claude_gateway.upstream.client import RETRY_POLICY, RetryPolicy, UpstreamClient

__all__ = ["WorkerNotConfigured", "analyze_document", "check_worker", "run_worker", "worker_settings"]

logger = logging.getLogger("claude_gateway.jobs")

_REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# Redis answered, and refused us: a wrong password or ACL is a configuration to fix (and, once the Secret is fixed, a
# restart picks it up), not an outage to wait out. The worker exits and says why.
_REDIS_REFUSALS = (AuthenticationError, AuthorizationError)

# ARQ's log line when it starts a job: '%6.2fs → %s(%s)%s' (queued for, job id:function, arguments, try).
_ARQ_JOB_START = "%6.2fs → %s(%s)%s"


class WorkerNotConfigured(Exception):
    """`claude-gateway worker` without REDIS_URL: there is no queue to work on."""


async def analyze_document(
    ctx: dict[str, Any],
    task_id: str,
    document: str,
    *,
    client: str = "unknown",
    trace_context: dict[str, str] | None = None,
    reservation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarise `document`; `raise Retry(defer=...)` on a transient upstream error while tries remain. At the
    job's end, settle the `reservation` made when it was submitted (`spend`) to what it spent.

    Safe to run again (ARQ does after an interrupted shutdown or a dead worker): the result is a function of the
    document, ARQ records it once, and the partial summaries already made are reused, not paid for twice.
    """
    settings: Settings = ctx["settings"]
    parts = RedisParts(ctx["redis"], parts_key(ctx["job_id"]))
    await parts.mark_started()  # an abort from now on is settled here, not by the API
    try:
        result = await run_attempt(
            ctx["upstream"],
            document,
            client=client,
            model=settings.default_model,
            parts=parts,
            attempt=ctx["job_try"],
            max_tries=settings.job_max_tries,
            trace_context=trace_context,
        )
    except RetryLater as retry:
        raise Retry(defer=retry.defer_s) from retry.error
    except JobFailed:
        await settle_worker_job(ctx, reservation, parts, client=client)
        await _forget_parts(parts)
        raise
    except asyncio.CancelledError:  # aborted, or a shutdown (whose re-run settles again at its own end)
        await asyncio.shield(settle_worker_job(ctx, reservation, parts, client=client))
        raise
    await settle_worker_job(ctx, reservation, parts, client=client)
    await _forget_parts(parts)
    return result


async def _forget_parts(parts: RedisParts) -> None:
    """The job is over: its partial summaries can go (they would expire anyway; failing here must not fail it)."""
    try:
        await parts.clear()
    except (RedisError, OSError) as exc:
        logger.warning("could not delete a finished job's partial summaries: %s", type(exc).__name__)


async def _sample_queue_depth(redis: ArqRedis) -> None:
    """Keep `claude_gateway_jobs_queued` current in the worker too: one ZCARD every QUEUE_DEPTH_SAMPLE_S."""
    while True:
        try:
            metrics.JOBS_QUEUED.set(await redis.zcard(QUEUE_NAME))
        except (RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.labels(operation="jobs").inc()
            logger.debug("queue depth sample failed: %s", type(exc).__name__)
        await asyncio.sleep(QUEUE_DEPTH_SAMPLE_S)


async def _startup(ctx: dict[str, Any], *, settings: Settings, retry_policy: RetryPolicy) -> None:
    """ARQ's `on_startup`: run again each time `_ride_out_redis_outages` restarts ARQ's loop, which builds nothing twice."""
    metrics.REDIS_UP.set(1)  # ARQ has just read Redis's INFO
    if "upstream" in ctx:
        logger.info("Redis answers again: the worker takes jobs again")
        return
    ctx["settings"] = settings
    # The worker prices what its jobs spend with the same table as the API (PRICES_FILE, else the shipped one).
    pricing.activate(settings.price_table)
    # The worker's one client to Anthropic, as the API process has its own.
    ctx["upstream"] = UpstreamClient(settings, retry_policy=retry_policy)
    ctx["queued_bytes"] = RedisQueuedBytes(ctx["redis"], settings.jobs_max_queued_bytes_per_client)
    leases = in_progress.InProgressLeases(ctx["redis"])
    ctx["in_progress"] = leases
    ctx["background"] = [
        asyncio.create_task(_sample_queue_depth(ctx["redis"])),
        asyncio.create_task(leases.run()),
    ]


async def _shutdown(ctx: dict[str, Any]) -> None:
    background: list[asyncio.Task[None]] = ctx.pop("background", [])
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    upstream: UpstreamClient | None = ctx.pop("upstream", None)
    if upstream is not None:
        await upstream.aclose()


async def _release_queued_bytes(ctx: dict[str, Any]) -> None:
    """ARQ's `after_job_end` (the result is recorded by then): the client's queued bytes come back once the job has
    ended; a try that will be retried keeps them. A Redis failure here is made good at the client's cap."""
    queued_bytes: RedisQueuedBytes | None = ctx.get("queued_bytes")
    if queued_bytes is None:
        return
    try:
        await queued_bytes.release_if_ended(ctx["job_id"])
    except _REDIS_FAILURES as exc:
        logger.warning("could not give back an ended job's queued bytes: %s", type(exc).__name__)


def redis_settings(settings: Settings) -> RedisSettings:
    if settings.redis_url is None:
        raise WorkerNotConfigured(
            "REDIS_URL is not set: `claude-gateway worker` needs Redis (without it, the API runs jobs in-process)"
        )
    return RedisSettings.from_dsn(settings.redis_url.get_secret_value())


def worker_settings(
    settings: Settings, *, retry_policy: RetryPolicy = RETRY_POLICY, job_timeout_s: float | None = None
) -> dict[str, Any]:
    """ARQ's WorkerSettings for our one job (raises `WorkerNotConfigured` without REDIS_URL).

    `retry_policy` (the worker's client's) and `job_timeout_s` are there for tests, which need short waits.
    """
    _hide_job_arguments()
    redis_pipeline.install()
    return {
        "functions": [func(analyze_document, name=JOB_FUNCTION)],
        "queue_name": QUEUE_NAME,
        "redis_settings": redis_settings(settings),
        "on_startup": partial(_startup, settings=settings, retry_policy=retry_policy),
        "on_shutdown": _shutdown,
        "on_job_start": in_progress.on_job_start,
        "on_job_end": in_progress.on_job_end,
        "after_job_end": _release_queued_bytes,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": WORKER_MAX_JOBS,
        "max_tries": settings.job_max_tries,
        "keep_result": settings.job_result_ttl_s,
        # One try of the largest document at the slowest upstream. ARQ marks a job in progress for this + 10 s;
        # `in_progress` shortens the mark to a lease the worker renews, so that another worker picks up a dead
        # worker's job within IN_PROGRESS_LEASE_S instead.
        "job_timeout": timeouts.job_timeout_s(settings) if job_timeout_s is None else job_timeout_s,
        # On SIGTERM, stop taking jobs and let running ones go on this long: one upstream call at its slowest
        # (one try at UPSTREAM_TIMEOUT_S: 30 s by default). A job still running then is cancelled and re-queued at
        # once, and resumes on another worker from the partial summaries already made. The worker pod's
        # terminationGracePeriodSeconds must exceed this plus ~10 s to close connections (40 s for the defaults),
        # or the kubelet's SIGKILL comes first and the job waits for its in-progress lease to lapse
        # (IN_PROGRESS_LEASE_S) before another worker runs it.
        "job_completion_wait": math.ceil(timeouts.call_budget_s(settings)),
        "allow_abort_jobs": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "health_check_key": health_check_key(),
        "log_results": False,  # a result is a summary of the caller's document: not for logs
    }


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGTERM or SIGINT (blocking): what `claude-gateway worker` does."""
    config = worker_settings(settings)
    tracing.setup_tracing("claude-gateway-worker")
    if settings.metrics_enabled:
        _serve_metrics(settings)
    # ARQ's Worker takes the current event loop (for its signal handlers too); make one explicitly rather than rely
    # on get_event_loop()'s deprecated creation of one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_run(create_worker(config), settings.worker_heartbeat_file))
    except _REDIS_REFUSALS as exc:
        raise WorkerNotConfigured(
            f"Redis refused the worker ({type(exc).__name__}): check the credentials in REDIS_URL"
        ) from None
    finally:
        loop.close()
        tracing.shutdown_tracing()


async def _run(worker: Worker, heartbeat_file: Path) -> None:
    """What ARQ's `Worker.run` does, with a heartbeat from the start and Redis outages ridden out.

    The heartbeat starts before Redis is reached: a worker started during an outage is alive, waiting for Redis.
    ARQ's signal handlers cancel `worker.main_task` to stop the worker, here the loop that restarts ARQ's.
    """
    beating = asyncio.create_task(heartbeat.beat(heartbeat_file))
    try:
        worker.main_task = asyncio.create_task(_ride_out_redis_outages(worker))
        with contextlib.suppress(asyncio.CancelledError):
            await worker.main_task
        try:
            await worker.close()
        except _REDIS_FAILURES as exc:  # stopping during an outage: ARQ could not delete its health key
            logger.warning("Redis did not answer as the worker stopped (%s)", type(exc).__name__)
            await _shutdown(worker.ctx)
    finally:
        heartbeat.stop(heartbeat_file)
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def _ride_out_redis_outages(worker: Worker) -> None:
    """ARQ's `Worker.main` (connect, then poll the queue until stopped), started again after a Redis failure.

    ARQ's loop ends at the first Redis error; the process would then exit and its pod restart, every worker at once
    in an outage. Instead: count it, say it once, wait REDIS_RETRY_S and start the loop again. Jobs under way are
    tasks of their own and go on meanwhile (a job that ends while Redis is down cannot record its outcome: its lease
    lapses and it is run again once Redis is back, from its stored parts).
    """
    answered = True
    while True:
        if answered:
            try:
                await worker.main()
                return
            except _REDIS_FAILURES as exc:
                metrics.REDIS_ERRORS.labels(operation="jobs").inc()
                metrics.REDIS_UP.set(0)
                if isinstance(exc, _REDIS_REFUSALS):
                    raise
                logger.warning(
                    "Redis did not answer (%s): the worker waits for it; jobs under way go on", type(exc).__name__
                )
        await asyncio.sleep(REDIS_RETRY_S)
        # ARQ's loop starts with log lines of its own: start it again once Redis answers a PING, not to find out.
        answered = await _answers(worker.ctx.get("redis"))


async def _answers(redis: ArqRedis | None) -> bool:
    if redis is None:  # no pool yet (Redis was down at start): ARQ's own connect retries, then says why it failed
        return True
    try:
        async with asyncio.timeout(REDIS_RETRY_S):  # ARQ's connections have no read timeout: a hung Redis hangs
            await redis.ping()
    except _REDIS_FAILURES:
        return False
    return True


def _serve_metrics(settings: Settings) -> None:
    """The worker's counters (jobs, upstream calls, tokens) on http://HOST:METRICS_PORT/metrics, from a thread."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client import multiprocess as prometheus_multiprocess

    registry = REGISTRY
    directory = metrics.multiprocess_dir()
    if directory is not None:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    port = settings.metrics_port
    try:
        start_http_server(port, addr=settings.host, registry=registry)
    except OSError as exc:
        logger.warning("worker metrics not served on %s:%d: %s", settings.host, port, exc.strerror)
    else:
        logger.info("worker metrics on http://%s:%d/metrics", settings.host, port)


class _HideJobArguments(logging.Filter):
    """ARQ logs the first 80 characters of a job's arguments when it starts it, which here means the caller's
    document. Keep the line (wait time, job id, try), drop the arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _ARQ_JOB_START and isinstance(record.args, tuple) and len(record.args) == 4:
            record.args = (record.args[0], record.args[1], "…", record.args[3])
        return True


def _hide_job_arguments() -> None:
    arq_logger = logging.getLogger("arq.worker")
    if not any(isinstance(existing, _HideJobArguments) for existing in arq_logger.filters):
        arq_logger.addFilter(_HideJobArguments())
