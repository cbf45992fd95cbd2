"""Calls to Anthropic's resource endpoints (Message Batches, Files) and their answers passed back as they came.

Every call goes through the process's one `UpstreamClient` (its pool, timeouts, TLS, proxy and retry policy) with
`return_errors`, so that Anthropic's unsuccessful answers come back to be relayed: status, body (error `type` and
`message`), `request-id`, `retry-after`, `retry-after-ms` and `x-should-retry`, which the SDKs and Claude Code read
to recover. The one exception is a 401: the gateway's own Anthropic key is bad, which is no fault of the client's,
so it becomes a 500 `api_error` "Internal configuration error" (`UpstreamMisconfigured`). A connection that fails
is the gateway's error in Anthropic's shape (503 / 504), as on `/v1/messages`.

Each call runs in a child span of the request's, `anthropic {METHOD} {route}`, with the GenAI provider, the
method, the route template and Anthropic's status; never an id, a file name or a body.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.datastructures import Headers
from starlette.responses import Response

from claude_gateway import tracing
from claude_gateway.errors import GatewayError, UpstreamFailed, UpstreamMisconfigured, classify
from claude_gateway.http_client import StreamedBody
from claude_gateway.relay import forwarded_headers
from claude_gateway.upstream_client import MAX_ERROR_BODY_BYTES, HTTPClientError, UpstreamClient
from claude_gateway.upstream_client import Response as UpstreamResponse

# Anthropic's headers a client reads from any answer, success or error.
RELAYED_HEADERS = ("request-id", "retry-after", "retry-after-ms", "x-should-retry")
# What describes a relayed body (its length is the answer's `content_length`).
BODY_HEADERS = ("content-type", "content-disposition")


def relayed_headers(response: UpstreamResponse, *, body: bool = False) -> dict[str, str]:
    names = RELAYED_HEADERS + BODY_HEADERS if body else RELAYED_HEADERS
    return {name: value for name in names if (value := response.headers.get(name))}


@contextmanager
def upstream_span(method: str, route: str) -> Iterator[Span]:
    """The child span of one call; ended with an error status when the call raises."""
    span = tracing.tracer.start_span(f"anthropic {method} {route}", kind=SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes(
            {
                "gen_ai.provider.name": tracing.PROVIDER,
                "gen_ai.system": tracing.PROVIDER,
                "http.request.method": method,
                "url.template": route,
            }
        )
    try:
        yield span
    except BaseException as exc:
        if isinstance(exc, Exception) and span.is_recording():
            if isinstance(exc, (GatewayError, HTTPClientError, TimeoutError)):
                error = classify(exc)
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, error.message))
            else:  # the client's side of the call (an upload past its bound, a client gone)
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR))
        raise
    finally:
        span.end()


async def call(
    upstream: UpstreamClient,
    method: str,
    path: str,
    *,
    route: str,
    client_headers: Headers,
    body: bytes | StreamedBody = b"",
    content_type: str | None = None,
    query: str = "",
) -> UpstreamResponse:
    """One call to `path`, with the client's `anthropic-version` / `anthropic-beta`; the answer, successful or not,
    with its body unread (the caller reads, relays or streams it, and releases it)."""
    headers = forwarded_headers(client_headers)
    if content_type is not None:
        headers["content-type"] = content_type
    with upstream_span(method, route) as span:
        response = await upstream.request(method, path, body=body, headers=headers, query=query, return_errors=True)
        if span.is_recording():
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 400:
                span.set_status(Status(StatusCode.ERROR))
    return response


async def read_body(response: UpstreamResponse, limit: int | None = None) -> bytes:
    """The answer's whole body, its connection released; a failure reading it is the gateway's error."""
    try:
        return await (response.read() if limit is None else response.read(limit))
    except (TimeoutError, HTTPClientError) as exc:
        raise classify(exc) from exc
    finally:
        response.release()


async def read_json(response: UpstreamResponse) -> tuple[bytes, dict[str, Any]]:
    """A successful answer's bytes and its JSON object (502 if it is not one)."""
    raw = await read_body(response)
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailed() from None
    if not isinstance(decoded, dict):
        raise UpstreamFailed()
    return raw, decoded


async def error_response(response: UpstreamResponse) -> Response:
    """Anthropic's unsuccessful answer as it came (a 401 raises `UpstreamMisconfigured` instead)."""
    if response.status == 401:
        response.release()
        raise UpstreamMisconfigured()
    try:
        raw = await read_body(response, MAX_ERROR_BODY_BYTES)
    except GatewayError:
        raise UpstreamFailed() from None
    return Response(raw, status_code=response.status, headers=relayed_headers(response, body=True))


def verbatim(raw: bytes, response: UpstreamResponse) -> Response:
    """A successful answer's bytes as they came, with its headers."""
    return Response(raw, status_code=response.status, headers=relayed_headers(response, body=True))


def json_answer(decoded: Any, response: UpstreamResponse) -> Response:
    """A successful JSON answer the gateway had to change (a batch's `results_url`), with Anthropic's headers."""
    headers = relayed_headers(response)
    return Response(orjson.dumps(decoded), status_code=response.status, headers=headers, media_type="application/json")
