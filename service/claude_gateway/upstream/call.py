"""The accounting every upstream call goes through, whichever route (or job) makes it.

`UpstreamCall` is the lifecycle of one call: it opens the `chat {model}` span, counts the call in flight, and on
`finish` / `fail` records outcome, duration, time to first token, tokens and overhead in one place.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from claude_gateway.errors import GatewayError, Outcome, classify
from claude_gateway.telemetry import metrics, tracing
from claude_gateway.upstream.usage import Usage, record_usage


class UpstreamCall:
    """One call to Anthropic, from request to last byte: span, in-flight gauge and every metric it feeds."""

    __slots__ = (
        "_done",
        "client",
        "model",
        "model_label",
        "span",
        "started",
        "stream",
        "ttft_recorded",
        "usage",
    )

    def __init__(self, *, model: str, max_tokens: int | None, client: str, stream: bool) -> None:
        self.model = model
        self.model_label = metrics.model_label(model)
        self.client = client
        self.stream = stream
        self.started = time.perf_counter()
        self.ttft_recorded = False
        self.usage = Usage()
        self._done = False
        self.span: Span = tracing.start_chat_span(model, max_tokens, stream=stream)
        metrics.UPSTREAM_INFLIGHT.inc()

    def context(self) -> Any:
        """Use the call's span as the current span, so that what the call does nests under it."""
        return trace.use_span(self.span, end_on_exit=False)

    def first_token(self, request_started: float) -> None:
        if not self.ttft_recorded:
            self.ttft_recorded = True
            metrics.time_to_first_token(self.model_label).observe(time.perf_counter() - request_started)

    def seen(self, usage: Usage) -> None:
        """Usage reported so far (streams report it in two events)."""
        self.usage = self.usage.merge(usage)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def finish(
        self,
        usage: Usage | None = None,
        *,
        response_id: str | None = None,
        finish_reason: str | None = None,
        response_model: str | None = None,
        output_text: str | None = None,
    ) -> None:
        if usage is not None:
            self.seen(usage)
        tracing.record_output(self.span, output_text)
        self._end("ok")
        tracing.end_chat_span(
            self.span,
            usage=self.usage,
            response_id=response_id,
            response_model=response_model,
            finish_reason=finish_reason,
        )

    def fail(self, error: GatewayError, *, response_id: str | None = None) -> None:
        self._end(error.outcome)
        tracing.end_chat_span(self.span, usage=self.usage, response_id=response_id, error=error)

    def cancelled(self) -> None:
        """The client went away: what was billed so far is still recorded; the call is not an upstream failure."""
        self._end(None)
        tracing.end_chat_span(self.span, usage=self.usage)

    def _end(self, outcome: Outcome | None) -> None:
        if self._done:
            return
        self._done = True
        metrics.UPSTREAM_INFLIGHT.dec()
        if outcome is not None:
            metrics.upstream_requests(self.model_label, outcome).inc()
        metrics.upstream_duration(self.model_label, "true" if self.stream else "false").observe(self.elapsed())
        record_usage(self.model, self.client, self.usage)

    def abort(self, exc: BaseException) -> None:
        """End the call on an exception: a classified failure, or (on cancellation) a client that left."""
        if self._done:
            return
        if isinstance(exc, Exception):
            self.fail(classify(exc))
        else:
            self.cancelled()

    def __enter__(self) -> UpstreamCall:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is not None:
            self.abort(exc)
        elif not self._done:
            self.finish()
