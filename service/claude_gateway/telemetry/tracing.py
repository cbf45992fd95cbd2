"""OpenTelemetry: the tracer provider from the standard `OTEL_*` variables, and the `chat {model}` span.

With no `OTEL_EXPORTER_OTLP_ENDPOINT` (nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) nothing is exported, no span
processor runs and the app is not instrumented (`recording`), so tracing costs next to nothing. Spans carry the
OpenTelemetry GenAI attributes and never the prompt or completion text unless
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from claude_gateway import __version__
from claude_gateway.errors import GatewayError
from claude_gateway.upstream.usage import Usage, cost_usd

TRACER_NAME = "claude_gateway"
# The USD cost of the call (chat span) or of the request (request span), at the gateway's prices: not a GenAI
# convention attribute (there is none for cost), so in the gateway's own namespace.
COST_ATTRIBUTE = "claude_gateway.cost_usd"
PROVIDER = "anthropic"
# Who is behind a request, on the request span (the FastAPI instrumentation's server span), never on metrics:
# Claude Code's session (its `X-Claude-Code-Session-Id` header), the end user an SDK names in `metadata.user_id`
# (no GenAI convention attribute for either), and the `anthropic-beta` values the request asks for.
SESSION_ID_ATTRIBUTE = "claude_code.session_id"
USER_ID_ATTRIBUTE = "claude_gateway.request.user_id"
BETAS_ATTRIBUTE = "claude_gateway.request.betas"
# The most `anthropic-beta` values recorded (Claude Code sends about eight), each cut to MAX_BETA_CHARS.
MAX_BETAS = 32
MAX_BETA_CHARS = 100

tracer = trace.get_tracer(TRACER_NAME, __version__)

_configured = False
# Prompt and completion text on spans: off unless OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT turns it on.
_capture_content = False


def set_content_capture(enabled: bool) -> None:
    global _capture_content
    _capture_content = enabled


def capturing_content() -> bool:
    return _capture_content


def record_input(span: Span, messages: Any, system: str | None) -> None:
    """The prompt as GenAI `gen_ai.input.messages` / `gen_ai.system_instructions`, only when capture is on."""
    if _capture_content and span.is_recording():
        span.set_attribute("gen_ai.input.messages", orjson.dumps(messages).decode())
        if system:
            span.set_attribute("gen_ai.system_instructions", system)


def record_output(span: Span, text: str | None) -> None:
    if _capture_content and text is not None and span.is_recording():
        message = [{"role": "assistant", "parts": [{"type": "text", "content": text}]}]
        span.set_attribute("gen_ai.output.messages", orjson.dumps(message).decode())


def exporting() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def recording() -> bool:
    """Whether spans are recorded at all: an SDK tracer provider is installed (`setup_tracing` installs one only when
    an endpoint is set; tests install their own). Without one every span is a no-op."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def setup_tracing(service_name: str = "claude-gateway") -> None:
    """Install a tracer provider once per process; export over OTLP/HTTP only when an endpoint is set."""
    global _configured
    if _configured or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    _configured = True
    if not exporting():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name), "service.version": __version__}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def start_chat_span(model: str, max_tokens: int | None, *, stream: bool, context: Context | None = None) -> Span:
    """The child span of one upstream call, named `chat {model}` as the GenAI conventions name it."""
    span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, context=context)
    if span.is_recording():
        span.set_attributes(
            {
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.system": PROVIDER,
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.request.stream": stream,
            }
        )
        if max_tokens is not None:
            span.set_attribute("gen_ai.request.max_tokens", max_tokens)
    return span


def start_operation_span(operation: str, model: str) -> Span:
    """The child span of an upstream call that is not a chat (`count_tokens`), named `{operation} {model}`."""
    span = tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes(
            {
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.system": PROVIDER,
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
            }
        )
    return span


def end_operation_span(span: Span, *, input_tokens: int | None = None, error: GatewayError | None = None) -> None:
    if span.is_recording():
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, error.message))
    span.end()


def end_chat_span(
    span: Span,
    *,
    usage: Usage | None,
    response_id: str | None = None,
    response_model: str | None = None,
    finish_reason: str | None = None,
    error: GatewayError | None = None,
) -> None:
    if span.is_recording():
        attributes: dict[str, Any] = {}
        if usage is not None:
            attributes.update(
                {
                    "gen_ai.usage.input_tokens": usage.input,
                    "gen_ai.usage.output_tokens": usage.output,
                    "gen_ai.usage.cache_read.input_tokens": usage.cache_read,
                    "gen_ai.usage.cache_creation.input_tokens": usage.cache_write,
                    "claude_gateway.upstream.usage.cache_creation.ephemeral_1h_input_tokens": usage.cache_write_1h,
                }
            )
            # The model is the span's own request attribute (set by `start_chat_span`).
            model = (getattr(span, "attributes", None) or {}).get("gen_ai.request.model")
            cost = cost_usd(model, usage) if isinstance(model, str) else None
            if cost is not None:
                attributes[COST_ATTRIBUTE] = float(cost)
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        if finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (finish_reason,)
        if error is not None:
            attributes["error.type"] = type(error).__name__
            span.set_status(Status(StatusCode.ERROR, error.message))
        span.set_attributes(attributes)
    span.end()


def record_cost(span: Span, cost: float | None) -> None:
    """The request's cost on its span (the request span: the FastAPI instrumentation's server span)."""
    if cost is not None and span.is_recording():
        span.set_attribute(COST_ATTRIBUTE, cost)


def record_request_attribution(span: Span, session_id: str | None, beta_headers: list[str]) -> None:
    """Claude Code's session id and the `anthropic-beta` values (from each such header, comma-separated) on the
    request span."""
    if not span.is_recording():
        return
    if session_id is not None:
        span.set_attribute(SESSION_ID_ATTRIBUTE, session_id)
    if beta_headers:
        betas = [beta.strip()[:MAX_BETA_CHARS] for header in beta_headers for beta in header.split(",")]
        span.set_attribute(BETAS_ATTRIBUTE, [beta for beta in betas if beta][:MAX_BETAS])


def record_user(user_id: str | None) -> None:
    """`metadata.user_id` of the request body on the request span (the current span in a route)."""
    if user_id is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(USER_ID_ATTRIBUTE, user_id)


def caller_context(traceparent: bytes, tracestate: bytes | None) -> Context:
    """The caller's W3C trace context, for a gateway that records no spans of its own (`recording`): its log lines
    and the jobs it enqueues still carry the caller's trace, as they would under the instrumentation."""
    carrier = {"traceparent": traceparent.decode("latin-1")}
    if tracestate is not None:
        carrier["tracestate"] = tracestate.decode("latin-1")
    return propagate.extract(carrier)


def inject_context() -> dict[str, str]:
    """The current trace context as W3C headers, for a job to continue the enqueuing request's trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> Context:
    return propagate.extract(dict(carrier))
