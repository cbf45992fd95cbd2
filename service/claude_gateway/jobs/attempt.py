"""One try of an analysis job, whoever runs it (an ARQ worker or the in-process runner).

A try ends in one of three ways:
- a result (`{"summary": ...}`), counted `complete`;
- `RetryLater(defer_s)` after a transient upstream error (429, 529, unreachable, timeout) while tries remain,
  counted `retried`; the runner waits `defer_s` and tries again (ARQ: `raise Retry(defer=...)`);
- `JobFailed` with a message of ours, counted `failed`: a permanent upstream error, or the last try's transient one.
A cancellation is not counted: it may be an abort (the task ends) or a shutdown (ARQ runs the job again).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
from opentelemetry.trace import SpanKind, Status, StatusCode

from claude_gateway import metrics, tracing
from claude_gateway.errors import (
    GatewayError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
    upstream_retry_after_s,
)
from claude_gateway.jobs.codec import JobFailed
from claude_gateway.jobs.constants import BACKOFF_BASE_S, BACKOFF_CAP_S, RETRY_AFTER_CAP_S
from claude_gateway.jobs.summarise import PartStore, summarise

logger = logging.getLogger("claude_gateway.jobs")

SPAN_NAME = "analyze_document"
TRANSIENT: tuple[type[GatewayError], ...] = (
    UpstreamRateLimited,
    UpstreamOverloaded,
    UpstreamUnreachable,
    UpstreamTimeout,
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter; an upstream `retry-after` wins when it asks for longer."""

    base_s: float = BACKOFF_BASE_S
    cap_s: float = BACKOFF_CAP_S

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(0, attempt - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
        return delay


class RetryLater(Exception):
    """A transient failure with tries left: run the job again in `defer_s` seconds."""

    def __init__(self, defer_s: float, error: GatewayError) -> None:
        super().__init__(f"retry in {defer_s:.2f}s after {type(error).__name__}")
        self.defer_s = defer_s
        self.error = error


def retry_after_of(error: GatewayError) -> float | None:
    """The `retry-after` Anthropic sent with this error, if it sent one (429s and some 529s do)."""
    cause = error.__cause__
    if not isinstance(cause, anthropic.APIStatusError):
        return None
    return upstream_retry_after_s(cause.response.headers) or None


async def run_attempt(
    upstream: anthropic.AsyncAnthropic,
    document: str,
    *,
    client: str,
    model: str,
    parts: PartStore,
    attempt: int,
    max_tries: int,
    backoff: Backoff,
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
            transient = isinstance(error, TRANSIENT)
            if transient and attempt < max_tries:
                status = "retried"
                defer_s = backoff.delay_s(attempt, retry_after_of(error))
                logger.info(
                    "job try %d of %d failed (%s); retrying in %.1fs", attempt, max_tries, error.outcome, defer_s
                )
                span.set_status(Status(StatusCode.ERROR, error.message))
                raise RetryLater(defer_s, error) from error
            message = f"{error.message} (gave up after {attempt} tries)" if transient else error.message
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
