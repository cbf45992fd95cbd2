"""The one client of a process for Anthropic's API: every route, the jobs and the deep health check call through it.

One place for the key, the base URL, the timeouts, TLS, the connection pool and the retry policy; no other module
speaks HTTP to Anthropic (jobs parse answers with the SDK's types, but make no HTTP through the SDK). The client
speaks bytes: a request body goes up as it came, and the answer comes back as an `upstream_pool.UpstreamResponse`
with its body unread, for the caller to read, relay or stream. No SDK in between: the relay routes pass bytes through, and,
profiled under load, the SDK's layers (request options, httpx over aiohttp, response objects) were a third of the
gateway's CPU per request.

The retry policy is the SDK's (`anthropic._base_client`): `x-should-retry` decides when Anthropic sends it, else
408, 409, 429, 5xx and failed connections are retried; the wait is Anthropic's `retry-after-ms` / `retry-after`,
else an exponential backoff with jitter (`RetryPolicy`). A call retries in place up to `UPSTREAM_MAX_RETRIES` times,
except that a `retry-after` longer than `MAX_RETRY_WAIT_S` is not waited out: the caller gets the 429 and its
`Retry-After` at once rather than a request held for a minute. Jobs call with `retries=0` and retry by being run
again after `RetryPolicy.delay_s`, the same function, so that no retry loop runs inside another.

Failures leave as `GatewayError`s, mapped by `errors.upstream_error` (which keeps Anthropic's answer for `/v1/*` to
relay); what caused one (an `UpstreamAnswer`, or the connection's own exception) is its `__cause__`, which is what
the retry policy reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from claude_gateway import __version__
from claude_gateway.errors import (
    classify_unanswered,
    upstream_error,
    upstream_retry_after_s,
)
from claude_gateway.settings import Settings
from claude_gateway.upstream.http_client import ConnectionDropped, StreamedBody

# What callers handle of the HTTP stack (the answer, and the error reading it may raise), from here only.
from claude_gateway.upstream.http_client import HTTPClientError as HTTPClientError
from claude_gateway.upstream.pool import UpstreamPool, UpstreamResponse, make_pool

# The answer callers read, whichever HTTP client the process runs.
Response = UpstreamResponse

ANTHROPIC_API_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
# The API version the SDK sends when a caller names none.
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# Connecting to Anthropic should take well under a second; a slow connect is a network fault, not a slow model.
CONNECT_TIMEOUT_S = 5.0
# Idle keep-alive connections kept per process, so that a burst does not pay new TLS handshakes; they are closed
# once idle for KEEPALIVE_S.
KEEPALIVE_CONNECTIONS = 256
KEEPALIVE_S = 30.0
# The SDK's backoff: 0.5 s doubling to 8 s, less up to a quarter of jitter (so that callers failed by the same
# overload do not all come back at the same instant).
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
# The longest a call waits in place before a retry; a longer `retry-after` goes back to the caller instead.
MAX_RETRY_WAIT_S = MAX_RETRY_DELAY_S
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A key that passes for one when none is configured: the simulator takes any key, and the real API answers 401,
# which the gateway maps to "Internal configuration error" (and logs at start-up).
PLACEHOLDER_KEY = "sk-ant-unset"
# An error body is read only to learn Anthropic's error type; a larger one is not an Anthropic error.
MAX_ERROR_BODY_BYTES = 64 * 1024
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether Anthropic's unsuccessful answer may be tried again: its `x-should-retry` if it says, else its status."""
    verdict = headers.get("x-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    return status in RETRYABLE_STATUSES or status >= 500


class UpstreamAnswer(Exception):
    """An unsuccessful answer of Anthropic's (its status and the headers kept), as the `__cause__` of the
    `GatewayError` it was classified as."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(f"Anthropic answered {status}")
        self.status = status
        self.headers = headers


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed call may go again, and after how long. One per client; tests shorten the backoff."""

    initial_delay_s: float = INITIAL_RETRY_DELAY_S
    max_delay_s: float = MAX_RETRY_DELAY_S

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number `retry` (0-based) when Anthropic names none."""
        ceiling = min(self.initial_delay_s * 2.0**retry, self.max_delay_s)
        return ceiling * (1 - 0.25 * random.random())  # noqa: S311 (jitter, not a secret)

    def delay_s(self, failure: BaseException | None, retry: int) -> float | None:
        """Seconds to wait before retry number `retry` (0-based) after `failure`, or None if it must not be retried.

        `failure` is what went wrong: an `UpstreamAnswer`, or the exception of a connection that failed or stalled
        (a `GatewayError`'s `__cause__`). Anthropic's `retry-after` is returned as asked, however long: the caller
        decides whether it can wait that long (a request cannot wait a minute; a job can).
        """
        if isinstance(failure, UpstreamAnswer):
            if not should_retry(failure.status, failure.headers):
                return None
            asked = upstream_retry_after_s(failure.headers)
            return asked if asked else self.backoff_s(retry)
        if isinstance(failure, (TimeoutError, HTTPClientError)):  # no whole answer came
            return self.backoff_s(retry)
        return None


RETRY_POLICY = RetryPolicy()


class UpstreamClient:
    """Anthropic's API over one connection pool: `post_message` for `POST /v1/messages` (the hot path), `request`
    for every other endpoint. One per process, built at start-up (the app's lifespan, a worker's start-up) and
    closed with `aclose()`; its pool belongs to the event loop that first uses it."""

    def __init__(self, settings: Settings, *, retry_policy: RetryPolicy = RETRY_POLICY) -> None:
        self.base_url = (
            str(settings.anthropic_base_url).rstrip("/") if settings.anthropic_base_url else ANTHROPIC_API_URL
        )
        # The base URL may carry a path of its own (an egress gateway's prefix, say): every path goes under it.
        self._prefix = urlsplit(self.base_url).path
        self._messages_target = self._prefix + MESSAGES_PATH
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else PLACEHOLDER_KEY
        self._headers = {
            "x-api-key": key,
            "anthropic-version": DEFAULT_ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"claude-gateway/{__version__}",
        }
        self.max_retries = settings.upstream_max_retries
        self.retry_policy = retry_policy
        self._connect_timeout_s = min(CONNECT_TIMEOUT_S, settings.upstream_timeout_s)
        self._read_timeout_s = settings.upstream_timeout_s
        self.http_client = settings.upstream_http_client
        self._pool: UpstreamPool[Any] | None = None

    @property
    def pool(self) -> UpstreamPool[Any]:
        """The connection pool of the HTTP client `UPSTREAM_HTTP_CLIENT` names, made on first use."""
        if self._pool is None:
            self._pool = make_pool(
                self.http_client,
                self.base_url,
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

    def post_message(
        self, body: bytes, forwarded: Mapping[str, str] = _NO_HEADERS, *, retries: int | None = None
    ) -> Coroutine[Any, Any, Response]:
        """`POST /v1/messages` with `body` as it is: a 2xx answer with its body unread, or, after the retries the
        policy allows (`retries`, `UPSTREAM_MAX_RETRIES` by default), a `GatewayError`.

        `forwarded` are the caller's headers to pass on (`anthropic-version`, `anthropic-beta`), over ours. A plain
        function returning the call's coroutine, so that the busiest path pays for no second coroutine.
        """
        headers = {**self._headers, **forwarded} if forwarded else self._headers.copy()
        retries = self.max_retries if retries is None else retries
        return self._send("POST", self._messages_target, body, headers, retries, return_errors=False)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | StreamedBody = b"",
        headers: Mapping[str, str] = _NO_HEADERS,
        query: str = "",
        retries: int | None = None,
        return_errors: bool = False,
    ) -> Response:
        """Any endpoint of Anthropic's API (`count_tokens`, models, batches, files): `path` from the API's root
        (`/v1/models/claude-sonnet-4-6`), `query` as it goes after the `?` (already encoded), `headers` over ours
        (the caller's `anthropic-version`, `anthropic-beta`, a `content-type` of its own).

        A 2xx answer comes back with its body unread. An unsuccessful one is retried as the policy allows (`retries`,
        `UPSTREAM_MAX_RETRIES` by default); the last is raised as the `GatewayError` it stands for, or, with
        `return_errors`, returned unread (for a relay that passes Anthropic's errors on as they came). A connection
        that cannot be made or read is always a `GatewayError` (`UpstreamUnreachable`, `UpstreamTimeout`).

        A `StreamedBody` (a file upload, a batch's creation) is sent as it is read, and so only once: a call whose
        body was started is not retried, whatever the policy says (its failure, or Anthropic's answer, goes back to
        the caller).
        """
        if not path.startswith("/"):
            raise ValueError(f"an API path starts with '/': {path!r}")
        target = f"{self._prefix}{path}?{query}" if query else self._prefix + path
        merged = {**self._headers, **headers}
        retries = self.max_retries if retries is None else retries
        return await self._send(method, target, body, merged, retries, return_errors=return_errors)

    async def _send(
        self,
        method: str,
        target: str,
        body: bytes | StreamedBody,
        headers: dict[str, str],
        retries: int,
        *,
        return_errors: bool,
    ) -> Response:
        pool = self.pool
        length = len(body) if isinstance(body, bytes) else body.length
        head = pool.head(method, target, headers.items(), length)
        retry = 0
        stale_retried = False
        while True:
            try:
                response = await pool.request(head, body)
            except (TimeoutError, HTTPClientError) as exc:
                replayable = isinstance(body, bytes) or not body.started
                if isinstance(exc, ConnectionDropped) and exc.stale and not stale_retried and replayable:
                    # Likely a pooled connection the upstream closed as it was reused: no answer began, so the
                    # request goes again at once on a new connection, once per call, outside the retry budget.
                    stale_retried = True
                    continue
                wait = self.retry_policy.delay_s(exc, retry)
                if wait is None or retry >= retries or not replayable:
                    raise classify_unanswered(exc) from exc
            else:
                if response.status < 300:
                    return response
                answer = UpstreamAnswer(response.status, response.headers)
                wait = self.retry_policy.delay_s(answer, retry)
                replayable = isinstance(body, bytes) or not body.started
                if wait is None or retry >= retries or wait > MAX_RETRY_WAIT_S or not replayable:
                    if return_errors:
                        return response
                    raise upstream_error(response.status, await _drain(response), answer.headers) from answer
                await _drain(response)
            retry += 1
            headers["x-stainless-retry-count"] = str(retry)
            head = pool.head(method, target, headers.items(), length)
            await asyncio.sleep(wait)


async def _drain(response: Response) -> bytes:
    """An unsuccessful answer's body (up to MAX_ERROR_BODY_BYTES, enough for Anthropic's error); its connection goes
    back to the pool when the body was read whole, and is closed otherwise."""
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
    return bytes(raw)
