"""The raw HTTP path to Anthropic's `POST /v1/messages`: one connection pool per process, no SDK in between.

The passthrough routes relay bytes, so nothing the SDK adds there (request options, its httpx layer over aiohttp,
response wrappers) earns its CPU: profiled under load it was a third of the gateway's time per request. This keeps
what the SDK gave that matters: the key, pooled keep-alive connections, the timeouts (to connect, and between two
reads), and the SDK's retry policy: 408, 409, 429, 5xx and failed connections are retried `UPSTREAM_MAX_RETRIES`
times, `x-should-retry` is obeyed, and the wait is Anthropic's `retry-after` or an exponential backoff with jitter.
Unlike the SDK, a `retry-after` longer than `MAX_RETRY_WAIT_S` is not waited out: the caller gets the 429 and its
`Retry-After` at once rather than a request held for a minute.

Failures leave as `GatewayError`s, mapped by `errors.classify_status` exactly as the SDK's exceptions are.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from urllib.parse import urlsplit

import orjson

from claude_gateway import __version__
from claude_gateway.errors import (
    GatewayError,
    classify_status,
    classify_unanswered,
    upstream_retry_after_s,
)
from claude_gateway.http_client import ConnectionDropped, ConnectionPool, HTTPClientError, Response
from claude_gateway.settings import Settings

ANTHROPIC_API_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
# The API version the SDK sends when a caller names none.
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# Connecting to Anthropic should take well under a second; a slow connect is a network fault, not a slow model.
CONNECT_TIMEOUT_S = 5.0
# Idle keep-alive connections kept per worker, so that a burst does not pay new TLS handshakes; they are closed
# once idle for KEEPALIVE_S.
KEEPALIVE_CONNECTIONS = 256
KEEPALIVE_S = 30.0
# The SDK's backoff: 0.5 s doubling to 8 s, less up to a quarter of jitter.
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_WAIT_S = MAX_RETRY_DELAY_S
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A key that passes for one when none is configured: the simulator takes any key, and the real API answers 401,
# which the gateway maps to "Internal configuration error" (and logs at start-up).
PLACEHOLDER_KEY = "sk-ant-unset"
# An error body is read only to learn Anthropic's error type; a larger one is not an Anthropic error.
MAX_ERROR_BODY_BYTES = 64 * 1024


def backoff_s(retry: int) -> float:
    """The SDK's wait before retry number `retry` (0-based) when Anthropic names none."""
    return min(INITIAL_RETRY_DELAY_S * 2.0**retry, MAX_RETRY_DELAY_S) * (1 - 0.25 * random.random())  # noqa: S311 (jitter)


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    verdict = headers.get("x-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    return status in RETRYABLE_STATUSES or status >= 500


class AnthropicTransport:
    """`POST /v1/messages` as bytes in, an `http_client.Response` out (its body unread, for the caller to read,
    stream or drop). Opened in the app's lifespan: a pool belongs to the event loop that creates it."""

    def __init__(self, settings: Settings) -> None:
        base = str(settings.anthropic_base_url).rstrip("/") if settings.anthropic_base_url else ANTHROPIC_API_URL
        self.url = base + MESSAGES_PATH
        # The base URL may carry a path of its own (an egress proxy's prefix, say).
        self.path = urlsplit(self.url).path
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else PLACEHOLDER_KEY
        self._headers = {
            "x-api-key": key,
            "anthropic-version": DEFAULT_ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"claude-gateway/{__version__}",
        }
        self.max_retries = settings.upstream_max_retries
        self._connect_timeout_s = min(CONNECT_TIMEOUT_S, settings.upstream_timeout_s)
        self._read_timeout_s = settings.upstream_timeout_s
        self._pool: ConnectionPool | None = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.url,
                connect_timeout_s=self._connect_timeout_s,
                read_timeout_s=self._read_timeout_s,
                keepalive_s=KEEPALIVE_S,
                max_idle=KEEPALIVE_CONNECTIONS,
            )
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        """The request's headers: ours, with the caller's `anthropic-version` and `anthropic-beta` in place."""
        return {**self._headers, **forwarded} if forwarded else self._headers.copy()

    async def post(self, body: bytes, forwarded: Mapping[str, str]) -> Response:
        """A 2xx response with its body unread; otherwise, after the retries the policy allows, a `GatewayError`."""
        pool = self.pool
        headers = self.headers(forwarded)
        head = pool.head("POST", self.path, headers.items(), len(body))
        retry = 0
        stale_retried = False
        while True:
            try:
                response = await pool.request(head, body)
            except (TimeoutError, HTTPClientError) as exc:
                if isinstance(exc, ConnectionDropped) and exc.stale and not stale_retried:
                    # Likely a pooled connection the upstream closed as it was reused: no answer began, so the
                    # request goes again at once on a new connection, once per call, outside the retry budget.
                    stale_retried = True
                    continue
                if retry >= self.max_retries:
                    raise classify_unanswered(exc) from None
                wait = backoff_s(retry)
            else:
                if response.status < 300:
                    return response
                error = await self._error(response)
                if retry >= self.max_retries or not should_retry(response.status, response.headers):
                    raise error
                wait = upstream_retry_after_s(response.headers) or 0.0
                if wait > MAX_RETRY_WAIT_S:
                    raise error
                if wait <= 0:
                    wait = backoff_s(retry)
            retry += 1
            headers["x-stainless-retry-count"] = str(retry)
            head = pool.head("POST", self.path, headers.items(), len(body))
            await asyncio.sleep(wait)

    @staticmethod
    async def _error(response: Response) -> GatewayError:
        """The error an unsuccessful answer stands for; its connection goes back to the pool (or is closed)."""
        raw = bytearray()
        try:
            async for chunk in response.chunks():
                raw += chunk
                if len(raw) > MAX_ERROR_BODY_BYTES:
                    break
        except (TimeoutError, HTTPClientError):
            pass
        finally:
            response.release()
        return classify_status(response.status, _error_type(bytes(raw)), response.headers)


def _error_type(raw: bytes) -> str | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None
