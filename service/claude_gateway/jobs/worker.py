"""The ARQ worker: the `analyze_document` job, and the settings `claude-gateway worker` runs it with.

`worker_settings(settings)` is an ARQ WorkerSettings (as a dict, which ARQ accepts wherever it takes the class):
`run_worker` runs it until SIGTERM; tests run it with `arq.worker.Worker(**worker_settings(s), burst=True)`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from functools import partial
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry, func
from arq.worker import run_worker as arq_run_worker
from redis.exceptions import RedisError

from claude_gateway import metrics, pricing, tracing
from claude_gateway.jobs import timeouts
from claude_gateway.jobs.arq_queue import connect
from claude_gateway.jobs.attempt import RetryLater, run_attempt
from claude_gateway.jobs.codec import JobFailed, deserialize, serialize
from claude_gateway.jobs.constants import (
    CHECK_TIMEOUT_S,
    HEALTH_CHECK_INTERVAL_S,
    JOB_FUNCTION,
    QUEUE_DEPTH_SAMPLE_S,
    QUEUE_NAME,
    WORKER_MAX_JOBS,
)
from claude_gateway.jobs.keys import health_check_key, parts_key
from claude_gateway.jobs.spend import settle_worker_job
from claude_gateway.jobs.summarise import RedisParts
from claude_gateway.settings import Settings
from claude_gateway.upstream_client import RETRY_POLICY, RetryPolicy, UpstreamClient

logger = logging.getLogger("claude_gateway.jobs")

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
    ctx["settings"] = settings
    # The worker prices what its jobs spend with the same table as the API (PRICES_FILE, else the shipped one).
    pricing.activate(settings.price_table)
    # The worker's one client to Anthropic, as the API process has its own.
    ctx["upstream"] = UpstreamClient(settings, retry_policy=retry_policy)
    ctx["queue_depth_sampler"] = asyncio.create_task(_sample_queue_depth(ctx["redis"]))


async def _shutdown(ctx: dict[str, Any]) -> None:
    sampler: asyncio.Task[None] | None = ctx.pop("queue_depth_sampler", None)
    if sampler is not None:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    upstream: UpstreamClient | None = ctx.pop("upstream", None)
    if upstream is not None:
        await upstream.aclose()


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
    return {
        "functions": [func(analyze_document, name=JOB_FUNCTION)],
        "queue_name": QUEUE_NAME,
        "redis_settings": redis_settings(settings),
        "on_startup": partial(_startup, settings=settings, retry_policy=retry_policy),
        "on_shutdown": _shutdown,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": WORKER_MAX_JOBS,
        "max_tries": settings.job_max_tries,
        "keep_result": settings.job_result_ttl_s,
        # One try of the largest document at the slowest upstream. ARQ marks a job in progress for this + 10 s:
        # that is how long after a worker dies another one picks its job up.
        "job_timeout": timeouts.job_timeout_s(settings) if job_timeout_s is None else job_timeout_s,
        # On SIGTERM, stop taking jobs and let running ones go on this long: one upstream call at its slowest
        # (one try at UPSTREAM_TIMEOUT_S: 30 s by default). A job still running then is cancelled and re-queued at
        # once, and resumes on another worker from the partial summaries already made. The worker pod's
        # terminationGracePeriodSeconds must exceed this plus ~10 s to close connections (40 s for the defaults),
        # or the kubelet's SIGKILL comes first and the job waits for its in-progress key to expire
        # (job_timeout + 10 s) before another worker runs it.
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
    # ARQ takes the current event loop; make one explicitly rather than rely on get_event_loop()'s deprecated
    # creation of one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    try:
        arq_run_worker(config)
    finally:
        tracing.shutdown_tracing()


def _serve_metrics(settings: Settings) -> None:
    """The worker's counters (jobs, upstream calls, tokens) on http://HOST:PORT/metrics, from a thread."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client import multiprocess as prometheus_multiprocess

    registry = REGISTRY
    directory = metrics.multiprocess_dir()
    if directory is not None:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    try:
        start_http_server(settings.port, addr=settings.host, registry=registry)
    except OSError as exc:
        logger.warning("worker metrics not served on %s:%d: %s", settings.host, settings.port, exc.strerror)
    else:
        logger.info("worker metrics on http://%s:%d/metrics", settings.host, settings.port)


def check_worker(settings: Settings) -> int:
    """`claude-gateway worker --check`: 0 when this host's worker wrote its health key lately, else 1."""
    if settings.redis_url is None:
        logger.error("REDIS_URL is not set: there is no worker to check")
        return 1
    return asyncio.run(_check(settings))


async def _check(settings: Settings) -> int:
    redis = connect(settings, timeout_s=CHECK_TIMEOUT_S)
    key = health_check_key()
    try:
        record = await redis.get(key)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.error("worker check: Redis did not answer (%s)", type(exc).__name__)
        return 1
    finally:
        await redis.aclose(close_connection_pool=True)
    if not record:
        logger.error("worker check: no recent health record at %s", key)
        return 1
    logger.info("worker check: %s", record.decode(errors="replace"))
    return 0


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
