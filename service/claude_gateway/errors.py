"""Every error the gateway answers with, each carrying its status, its outcome and its headers.

    GatewayError
    ├── ClientError                       the caller's request is at fault
    │   ├── MissingKey          401
    │   ├── UnknownKey          403
    │   ├── InvalidRequest      400 / 422
    │   ├── NotFound            404
    │   ├── PayloadTooLarge     413
    │   └── RateLimited         429 (our own limits; Retry-After, X-RateLimit-*)
    ├── Overloaded              503 (our own backpressure, Redis fail-closed)
    └── UpstreamError                     Anthropic failed us
        ├── UpstreamRateLimited     429 rate_limited
        ├── UpstreamOverloaded      503 overloaded
        ├── UpstreamUnreachable     503 unreachable
        │   └── EgressProxyFailed   503 unreachable (the egress proxy, named by host:port, refused or was down)
        ├── UpstreamTimeout         504 timeout
        ├── UpstreamMisconfigured   500 error   "Internal configuration error"
        ├── UpstreamRejected        400/404/413 error (the request was bad for Anthropic: safe to pass on)
        └── UpstreamFailed          502 error

One `classify()` turns any exception met while calling Anthropic into one of these (`upstream_error()` an
unsuccessful answer); the HTTP handlers render it as
`{"detail": ...}` or as Anthropic's `{"type": "error", "error": {...}}` depending on the route (see `render`),
and the `outcome` feeds `claude_gateway_upstream_requests_total{outcome}`.

Messages here are ours. The one exception is on `/v1/*`, whose clients are Anthropic's own SDKs and Claude Code:
there an unsuccessful answer of Anthropic's goes back as it came (`GatewayError.relayed`: status, body, `request-id`,
`retry-after`, `x-should-retry`), since those clients read its type and wording to recover, except a 401 (the
gateway's own Anthropic key is bad), which stays "Internal configuration error". `/chat`, `/chat/stream` and
`/analyze` never show Anthropic's text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import orjson

from claude_gateway.http_client import ConnectFailed, HTTPClientError, ProxyError

Outcome = Literal["ok", "rate_limited", "overloaded", "timeout", "unreachable", "error"]


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """An unsuccessful answer of Anthropic's as it came, for `/v1/*` to relay: its status, its body (an Anthropic
    error object), and the headers the HTTP client keeps (`request-id`, `retry-after`, `retry-after-ms`,
    `x-should-retry`)."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    # Anthropic's error `type` for this error on /v1/messages.
    anthropic_type: ClassVar[str] = "api_error"
    outcome: ClassVar[Outcome] = "error"
    default_message: ClassVar[str] = "Internal error"
    # Anthropic's own answer behind this error, when it is one `/v1/*` relays as it came (`upstream_error`).
    relayed: UpstreamReply | None = None

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.headers: dict[str, str] = headers or {}
        super().__init__(self.message)


class ClientError(GatewayError):
    status_code = 400
    anthropic_type = "invalid_request_error"
    default_message = "Invalid request"


class MissingKey(ClientError):
    status_code = 401
    anthropic_type = "authentication_error"
    default_message = "Missing API key: send it in X-API-Key or Authorization: Bearer"


class UnknownKey(ClientError):
    status_code = 403
    anthropic_type = "permission_error"
    default_message = "Invalid API key"


class InvalidRequest(ClientError):
    status_code = 400


class NotFound(ClientError):
    status_code = 404
    anthropic_type = "not_found_error"
    default_message = "Not found"


class PayloadTooLarge(ClientError):
    status_code = 413
    anthropic_type = "request_too_large"
    default_message = "Request body too large"


class RateLimited(ClientError):
    status_code = 429
    anthropic_type = "rate_limit_error"
    default_message = "Rate limit exceeded"


class Overloaded(GatewayError):
    status_code = 503
    anthropic_type = "overloaded_error"
    default_message = "The gateway is busy. Try again shortly."


class UpstreamError(GatewayError):
    status_code = 502
    default_message = "Claude API error"


class UpstreamRateLimited(UpstreamError):
    status_code = 429
    anthropic_type = "rate_limit_error"
    outcome = "rate_limited"
    default_message = "Claude rate limit reached. Try again in a moment."


class UpstreamOverloaded(UpstreamError):
    status_code = 503
    anthropic_type = "overloaded_error"
    outcome = "overloaded"
    default_message = "Claude is overloaded. Try again."


class UpstreamUnreachable(UpstreamError):
    status_code = 503
    anthropic_type = "api_error"
    outcome = "unreachable"
    default_message = "Could not reach Claude API."


class EgressProxyFailed(UpstreamUnreachable):
    """The egress proxy could not be reached or refused the tunnel: the message names it (host:port, never its
    credentials) so that whoever reads the 503 knows where to look."""

    default_message = "Could not reach Claude API through the egress proxy."


class UpstreamTimeout(UpstreamError):
    status_code = 504
    anthropic_type = "timeout_error"
    outcome = "timeout"
    default_message = "Claude API timed out."


class UpstreamMisconfigured(UpstreamError):
    status_code = 500
    anthropic_type = "api_error"
    default_message = "Internal configuration error"


class UpstreamRejected(UpstreamError):
    """Anthropic refused the request itself (400, 404, 413, 422): the caller can fix it, so say so."""

    status_code = 400
    anthropic_type = "invalid_request_error"
    default_message = "Claude API rejected the request"

    def __init__(
        self, message: str | None = None, *, status_code: int = 400, anthropic_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code  # type: ignore[misc]
        if anthropic_type:
            self.anthropic_type = anthropic_type  # type: ignore[misc]


class UpstreamFailed(UpstreamError):
    status_code = 502


# Messages for the caller's own mistakes that Anthropic reports: its wording is about the request, not about us,
# but we still do not relay it verbatim (it may quote the request back); the type is enough to act on.
_REJECTED_MESSAGES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Claude API rejected the request as invalid"),
    404: ("not_found_error", "Claude API does not know the requested model or resource"),
    413: ("request_too_large", "Request too large for Claude API"),
    422: ("invalid_request_error", "Claude API could not process the request"),
}

# Anthropic asks callers to wait this long when a 429 names no time.
DEFAULT_UPSTREAM_RETRY_AFTER_S = 60


def retry_after_seconds(reset_at: float, now: float) -> int:
    """Whole seconds until `reset_at`, rounded up, never below 1: a `Retry-After` a client can obey."""
    return max(1, math.ceil(reset_at - now))


def upstream_retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait Anthropic asks for before a retry: `retry-after-ms`, else `retry-after` in (possibly fractional)
    seconds; None when it names none that is a finite, non-negative number (an HTTP date is not used)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _client_retry_after(headers: Mapping[str, str]) -> str:
    """Anthropic's wait, as a `Retry-After` a client can obey (whole seconds, at least one)."""
    seconds = upstream_retry_after_s(headers)
    return str(DEFAULT_UPSTREAM_RETRY_AFTER_S if seconds is None else max(1, math.ceil(seconds)))


def classify_status(status: int, error_type: str | None, headers: Mapping[str, str]) -> GatewayError:
    """Map an unsuccessful answer of Anthropic's (its status, its error `type`, its headers) onto our error."""
    if status == 429:
        return UpstreamRateLimited(headers={"Retry-After": _client_retry_after(headers)})
    if status in (401, 403):
        return UpstreamMisconfigured()
    if status == 529 or error_type == "overloaded_error":
        return UpstreamOverloaded()
    if status in _REJECTED_MESSAGES:
        kind, message = _REJECTED_MESSAGES[status]
        return UpstreamRejected(message, status_code=status, anthropic_type=kind)
    return UpstreamFailed()


def upstream_error(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Anthropic's unsuccessful answer (its status, its body or the first bytes of it, its kept headers) as our error,
    carrying the answer itself (`relayed`) when it is an Anthropic error object that `/v1/*` may pass on: anything
    but a 401, which says the gateway's own key is bad (the caller's request is not at fault)."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    envelope: dict[str, object] = decoded if isinstance(decoded, dict) else {}
    inner = envelope.get("error")
    error_object: dict[str, object] = inner if isinstance(inner, dict) else {}
    error_type = error_object.get("type")
    error = classify_status(status, error_type if isinstance(error_type, str) else None, headers)
    anthropic_error = (
        envelope.get("type") == "error" and isinstance(error_type, str) and isinstance(error_object.get("message"), str)
    )
    if anthropic_error and status != 401:
        error.relayed = UpstreamReply(status, body, headers)
    return error


def classify(exc: BaseException) -> GatewayError:
    """Map an exception met while calling Anthropic onto the gateway's own error (a flat ladder, most specific first)."""
    if isinstance(exc, GatewayError):
        return exc
    # Reads of a body after its 2xx raise the connection's own errors.
    if isinstance(exc, ProxyError):
        return EgressProxyFailed(f"Could not reach Claude API: {exc}")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, ConnectFailed):
        return UpstreamUnreachable()
    return UpstreamFailed()


def classify_unanswered(exc: TimeoutError | HTTPClientError) -> GatewayError:
    """A request that got no answer (after its retries): the egress proxy's failure naming it, a timeout, or else
    unreachable."""
    if isinstance(exc, ProxyError):
        return classify(exc)
    return UpstreamTimeout() if isinstance(exc, TimeoutError) else UpstreamUnreachable()


def classify_stream_error(error_type: str | None) -> GatewayError:
    """An in-band SSE `error` event (after a 200) mapped like its HTTP equivalent."""
    if error_type == "overloaded_error":
        return UpstreamOverloaded()
    if error_type == "rate_limit_error":
        return UpstreamRateLimited()
    if error_type in {"authentication_error", "permission_error"}:
        return UpstreamMisconfigured()
    if error_type == "timeout_error":
        return UpstreamTimeout()
    return UpstreamFailed()
