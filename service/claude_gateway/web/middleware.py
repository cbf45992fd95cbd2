"""The gateway's one pure-ASGI middleware: request id, body bound, metrics, and the access log line.

Pure ASGI (no `BaseHTTPMiddleware`) so that streamed bodies pass through untouched, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from decimal import Decimal

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from claude_gateway import pricing
from claude_gateway.context import SCOPE_KEY, RequestContext
from claude_gateway.errors import PayloadTooLarge
from claude_gateway.settings import Settings
from claude_gateway.telemetry import metrics, tracing
from claude_gateway.telemetry.logs import get_logger
from claude_gateway.upstream.usage import cost_usd
from claude_gateway.web.anthropic_request import bounded_attribution
from claude_gateway.web.drain import Drain
from claude_gateway.web.exception_handlers import error_body
from claude_gateway.web.extensions import BODY_TIMEOUT, disconnect_extension

access_log = get_logger("claude_gateway.access")

# Probes and scrapes: not counted in the request metrics and logged at debug only, or they would drown the rest.
QUIET_PREFIXES = ("/health", "/metrics")
UNMATCHED_ROUTE = "unmatched"
ANTHROPIC_PREFIX = "/v1/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The default of `BODY_TIMEOUT_S`, for a middleware built without settings.
DEFAULT_BODY_TIMEOUT_S: float = Settings.model_fields["body_timeout_s"].default
# Both refusals below happen while the client may still be sending: the connection is closed after the answer
# rather than kept reading the rest. They are HTTPExceptions because FastAPI re-raises those from its body read
# (any other exception there becomes a bare 400).
_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    """Raised from `receive()` once a body read so far passes the bound (a chunked body, or a lying Content-Length)."""

    def __init__(self) -> None:
        super().__init__(PayloadTooLarge.status_code, PayloadTooLarge.default_message, headers=_CLOSE)


class BodyTimeout(HTTPException):
    """Raised from `receive()` when the body has not all arrived within `BODY_TIMEOUT_S`."""

    def __init__(self) -> None:
        super().__init__(408, "Request body not received in time", headers=_CLOSE)


class GatewayMiddleware:
    """`self_bounded`: the (method, path) of requests whose route bounds its own body as it streams it (a file
    upload, a batch's creation: `web.upload_body`): neither `max_body_bytes` nor the body deadline applies to them
    here. An answer to one that comes before its body was read to the end (a refusal, or Anthropic's early answer)
    closes the connection, rather than the server reading and dropping up to `FILES_MAX_BYTES` of it.

    `takes_caller_trace`: the app is not instrumented (nothing records spans), so the caller's `traceparent` is made
    the current context here, for the request's log lines and the jobs it enqueues."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float | None = None,
        self_bounded: frozenset[tuple[str, str]] = frozenset(),
        drain: Drain | None = None,
        takes_caller_trace: bool = False,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = DEFAULT_BODY_TIMEOUT_S if body_timeout_s is None else body_timeout_s
        self.self_bounded = self_bounded
        # Looked up first: one hash of a string per request, rather than of a tuple.
        self.self_bounded_paths = frozenset(path for _, path in self_bounded)
        # Counts the requests in flight, which the server waits for when it drains (`drain.Drain`).
        self.drain = drain if drain is not None else Drain()
        self.takes_caller_trace = takes_caller_trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = ""
        content_length = -1
        session_id: str | None = None
        betas: list[str] = []
        traceparent: bytes | None = None
        tracestate: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif name == b"x-claude-code-session-id":
                session_id = bounded_attribution(value.decode("latin-1"))
            elif name == b"anthropic-beta":
                betas.append(value.decode("latin-1"))
            elif name == b"traceparent":
                traceparent = value
            elif name == b"tracestate":
                tracestate = value
        context = RequestContext(
            request_id=request_id or uuid.uuid4().hex,
            # Anthropic's API lives under /v1/: every answer there, 404 and 405 included (which no route sees),
            # takes Anthropic's error shape so that SDKs raise their usual exceptions.
            error_style="anthropic" if scope["path"].startswith(ANTHROPIC_PREFIX) else "detail",
            session_id=session_id,
        )
        scope[SCOPE_KEY] = context
        if session_id is not None or betas:
            # The request span is current here (OpenTelemetry's middleware is outside this one).
            tracing.record_request_attribution(trace.get_current_span(), session_id, betas)
        status_code = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.append((b"x-request-id", context.request_id.encode()))
                # The response's own values win (a 429 states the limit that refused it).
                for name, value in context.extra_headers.items():
                    encoded = name.lower().encode()
                    if encoded not in present:
                        headers.append((encoded, value.encode()))
                if self.drain.active and b"connection" not in present:
                    # Draining: a keep-alive client (an ingress) takes its next request elsewhere.
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # The request span (OpenTelemetry's ASGI middleware, outside this one) ends with the last byte:
                # its cost goes on it now. Usage is final by then (a stream settles before its last byte).
                _settle_cost(context)
            await send(message)

        token = None
        if traceparent is not None and self.takes_caller_trace:
            token = otel_context.attach(tracing.caller_context(traceparent, tracestate))
        self.drain.request_started()
        try:
            path = scope["path"]
            if path in self.self_bounded_paths and (scope["method"], path) in self.self_bounded:
                await _closing_unless_read(self.app, scope, receive, send_wrapper)
                return
            if content_length > self.max_body_bytes:
                # Refused from its Content-Length: not one byte of the body is read.
                await _send_too_large(context, send_wrapper)
                return
            await self.app(
                scope, self._bounded(scope, receive, context) if scope["method"] != "GET" else receive, send_wrapper
            )
        finally:
            self.drain.request_finished()
            self._record(scope, context, status_code if response_started else 500)
            if token is not None:
                otel_context.detach(token)

    def _bounded(self, scope: Scope, receive: Receive, context: RequestContext) -> Receive:
        """Count body bytes as they are read; past the bound, the read fails with 413 (chunked bodies too).
        Until the body is complete each read also has a deadline; after it, reads (a stream waiting for the
        client's disconnect) wait as long as they like.

        Served by the gateway's HTTP protocol, the bounds are the protocol's, from the head's end whether or not the
        body is read: it wakes a read that is past one, and names the refusal in the request's extension."""
        received = 0
        limit = self.max_body_bytes
        body_done = False
        extension = disconnect_extension(scope)
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            if extension is not None:
                message = await receive()
                if extension["refused"]:
                    raise BodyTimeout() if extension["refused"] == BODY_TIMEOUT else BodyTooLarge()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
                body_done = not message.get("more_body", False)
            else:
                # The client left before its body was whole: count it as gone, whatever the app makes of it.
                context.disconnected = message["type"] == "http.disconnect"
                body_done = True
            return message

        return bounded_receive

    def _record(self, scope: Scope, context: RequestContext, status_code: int) -> None:
        now = time.perf_counter()
        duration = now - context.started
        path: str = scope["path"]
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED_ROUTE
        quiet = path.startswith(QUIET_PREFIXES)
        # Only a request that called Anthropic has an overhead apart from its duration.
        overhead = context.overhead_s(now) if context.upstream_s > 0 else None
        if not quiet:
            method = scope["method"]
            metrics.http_requests(template, method, str(status_code)).inc()
            metrics.http_duration(template, method).observe(duration)
            if overhead is not None:
                metrics.overhead(template).observe(overhead)
            if context.disconnected:
                metrics.client_disconnects(template).inc()
        usage = context.usage
        cost = context.cost_usd if context.costed else _settle_cost(context, on_span=False)
        level = logging.DEBUG if quiet and status_code < 500 else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        access_log.log(
            level,
            "request",
            extra={
                "method": scope["method"],
                "path": path,
                # The peer's address, or X-Forwarded-For's when the peer is trusted (FORWARDED_ALLOW_IPS).
                "remote_addr": peer[0] if (peer := scope.get("client")) else None,
                "route": template,
                "status_code": status_code,
                "duration_ms": round(duration * 1000, 2),
                "overhead_ms": round(overhead * 1000, 2) if overhead is not None else None,
                "client": context.client,
                "model": context.model,
                "input_tokens": usage.input if usage else None,
                "output_tokens": usage.output if usage else None,
                "cache_read_tokens": usage.cache_read if usage else None,
                "cache_write_tokens": usage.cache_write if usage else None,
                "cache_write_1h_tokens": usage.cache_write_1h if usage else None,
                "cost_usd": _usd_number(cost),
                "disconnected": context.disconnected or None,
                "session_id": context.session_id,
                "user_id": context.user_id,
                "request_id": context.request_id,
            },
        )


def _usd_number(cost: Decimal | None) -> float | None:
    """Rounded as the X-Gateway-Cost-USD header is, so that the log line, the span and the header agree."""
    return float(round(cost, pricing.COST_DECIMAL_PLACES)) if cost is not None else None


def _settle_cost(context: RequestContext, *, on_span: bool = True) -> Decimal | None:
    """The request's cost from its final usage, kept on the context (and put on the current span, the request's)."""
    context.cost_usd = cost_usd(context.model, context.usage) if context.model is not None else None
    context.costed = True
    if on_span and context.cost_usd is not None:
        tracing.record_cost(trace.get_current_span(), _usd_number(context.cost_usd))
    return context.cost_usd


async def _closing_unless_read(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app`, adding `Connection: close` to an answer that starts before the request body was all read."""
    body_read = False

    async def tracking_receive() -> Message:
        nonlocal body_read
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_read = True
        return message

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start" and not body_read:
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"connection" for name, _ in headers):
                headers.append((b"connection", b"close"))
            message["headers"] = headers
        await send(message)

    await app(scope, tracking_receive, closing_send)


async def _send_too_large(context: RequestContext, send: Send) -> None:
    error = PayloadTooLarge()
    body = error_body(context.error_style, error.anthropic_type, error.message, context.request_id)
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
