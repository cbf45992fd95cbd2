"""One try of an analysis job, whoever runs it (an ARQ worker or the in-process runner).

A try makes its upstream calls once each (`retries=0`): the job itself is what retries, by running again, so that
no retry loop runs inside another. A try ends in one of three ways:
- a result (`{"summary": ...}`), counted `complete`;
- `RetryLater(defer_s)` after an upstream failure the client's `RetryPolicy` would retry (429, 529 and other 5xx,
  408, 409, unreachable, timeout; `x-should-retry` decides when Anthropic sends it) while tries remain, counted
  `retried`; the runner waits `defer_s` and tries again (ARQ: `raise Retry(defer=...)`). The wait is the policy's:
  Anthropic's `retry-after` when it names one (up to RETRY_AFTER_CAP_S), else its backoff;
- `JobFailed` with a message of ours, counted `failed`: an upstream failure not to retry, or the last try's.
A cancellation is not counted: it may be an abort (the task ends) or a shutdown (ARQ runs the job again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from claude_gateway.errors import GatewayError
from claude_gateway.jobs.codec import JobFailed
from claude_gateway.jobs.constants import RETRY_AFTER_CAP_S
from claude_gateway.jobs.summarise import PartStore, summarise
from claude_gateway.telemetry import metrics, tracing
from claude_gateway.upstream.client import UpstreamClient

logger = logging.getLogger("claude_gateway.jobs")

SPAN_NAME = "analyze_document"


class RetryLater(Exception):
    """A failure to retry, with tries left: run the job again in `defer_s` seconds."""

    def __init__(self, defer_s: float, error: GatewayError) -> None:
        super().__init__(f"retry in {defer_s:.2f}s after {type(error).__name__}")
        self.defer_s = defer_s
        self.error = error


def retry_delay_s(upstream: UpstreamClient, error: GatewayError, attempt: int) -> float | None:
    """How long to wait before running the job again after `error` ended try number `attempt` (1-based), by the
    client's own retry policy; None when the error is not one to retry."""
    delay_s = upstream.retry_policy.delay_s(error.__cause__, attempt - 1)
    return None if delay_s is None else min(delay_s, RETRY_AFTER_CAP_S)


async def run_attempt(
    upstream: UpstreamClient,
    document: str,
    *,
    client: str,
    model: str,
    parts: PartStore,
    attempt: int,
    max_tries: int,
    trace_context: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Try once to summarise `document`, as a span in the trace of the request that enqueued the job."""
    started = time.perf_counter()
    parent = tracing.extract_context(trace_context or {})
    with tracing.tracer.start_as_current_span(
        SPAN_NAME, context=parent, kind=SpanKind.CONSUMER, record_exception=False, set_status_on_exception=False
    ) as span:
        span.set_attribute("claude_gateway.job.attempt", attempt)
        status: str | None = "failed"
        try:
            summary = await summarise(upstream, document, client=client, model=model, parts=parts)
        except asyncio.CancelledError:
            status = None
            span.set_attribute("claude_gateway.job.outcome", "cancelled")
            raise
        except GatewayError as error:
            defer_s = retry_delay_s(upstream, error, attempt)
            if defer_s is not None and attempt < max_tries:
                status = "retried"
                logger.info(
                    "job try %d of %d failed (%s); retrying in %.1fs", attempt, max_tries, error.outcome, defer_s
                )
                span.set_attribute("claude_gateway.job.retry_in_s", defer_s)
                span.set_status(Status(StatusCode.ERROR, error.message))
                raise RetryLater(defer_s, error) from error
            message = f"{error.message} (gave up after {attempt} tries)" if defer_s is not None else error.message
            span.set_status(Status(StatusCode.ERROR, message))
            raise JobFailed(message) from error
        except JobFailed as failure:
            span.set_status(Status(StatusCode.ERROR, failure.message))
            raise
        except Exception:
            span.set_status(Status(StatusCode.ERROR, "Internal error"))
            raise
        else:
            status = "complete"
            span.set_attributes(
                {
                    "claude_gateway.job.chunks": summary.chunks,
                    "claude_gateway.job.levels": summary.levels,
                    "claude_gateway.job.calls": summary.calls,
                }
            )
            return {"summary": summary.text, "chunks": summary.chunks, "calls": summary.calls}
        finally:
            if status is not None:
                span.set_attribute("claude_gateway.job.outcome", status)
                metrics.JOBS.labels(status=status).inc()
                metrics.JOB_DURATION.observe(time.perf_counter() - started)
