"""The upstream pool on aiohttp (`UPSTREAM_HTTP_CLIENT=aiohttp`): `http_client.ConnectionPool`'s contract (see
`upstream_pool`) kept through aiohttp's public API only, so that both can be measured and tested side by side
(docs/http-client.md).

How each behaviour of ours maps onto aiohttp:
- keep-alive: one `ClientSession` and `TCPConnector` per pool (no limit on open connections: the callers' upstream
  slots bound them; idle ones closed after `keepalive_s`). aiohttp keeps no bound on the idle ones (`max_idle`).
- egress: our `egress.EgressProxies` decides (so `NO_PROXY` matches ours exactly) and the proxy goes with each
  request (`proxy=`, `proxy_headers=` with our `Proxy-Authorization`); `trust_env` is off.
- bounds: the answer head through aiohttp's parser limits (`max_line_size`, `max_field_size`, `max_headers`: per
  line and a count, not a total); the head deadline with `asyncio.timeout`, armed once the request is sent whole
  (aiohttp's `on_request_headers_sent` trace for bytes bodies, the end of a streamed body otherwise); the read
  timeout is aiohttp's `sock_read` (stopped while the reader is behind, as ours); flow control is `read_bufsize`.
- errors: aiohttp's exceptions become `http_client`'s (`_translate`), so `errors.classify` and the retry policy
  see the same failures whichever client runs.
- bytes go up and come back as they are: no `Accept-Encoding` added, no decompression, no cookies, no redirects.

What it cannot do (each a strict xfail of the conformance suite, with its reason): bound the answer head in total,
bound the idle connections (`max_idle`), or close a connection whose answer is followed by stray bytes (the next
request on it fails instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from types import SimpleNamespace

import aiohttp
from aiohttp import hdrs
from aiohttp.http_exceptions import LineTooLong

from claude_gateway.upstream.egress import EgressProxies
from claude_gateway.upstream.http_client import (
    HIGH_WATER_BYTES,
    KEPT_HEADERS,
    MAX_RESPONSE_BODY_BYTES,
    MAX_RESPONSE_HEAD_BYTES,
    ConnectFailed,
    ConnectionDropped,
    ConnectTimeout,
    HTTPClientError,
    MalformedResponse,
    Origin,
    ProxyError,
    ProxyRefused,
    ReadTimeout,
    ResponseHeadTimeout,
    ResponseHeadTooLarge,
    StreamedBody,
    read_bounded,
    tls_context,
)

logger = logging.getLogger("claude_gateway.upstream")

# aiohttp bounds the head per line and by count, not in total. Each header line may take aiohttp's default of 8 KiB
# (nginx's `large_client_header_buffers` size; Anthropic's whole head is under 2 KiB) and a head 128 lines: at
# worst 1 MiB held, against our 64 KiB in all. The status line gets the whole head bound.
MAX_HEADER_LINE_BYTES = 8 * 1024
MAX_HEADER_LINES = 128
# aiohttp adds these unless told not to: the gateway relays bytes as Anthropic sent them (no compression asked for)
# and names itself in its own headers.
SKIPPED_AUTO_HEADERS = (hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.CONTENT_TYPE)
_FORBIDDEN_IN_HEADERS = str.maketrans("", "", "\r\n\0")


class PreparedRequest:
    """What `AiohttpPool.head()` makes: the method, the absolute URL and the headers of one request."""

    __slots__ = ("headers", "method", "url")

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


class _Attempt:
    """One request's state, shared with aiohttp's trace hooks (`trace_request_ctx`)."""

    __slots__ = ("answered", "cut_short", "deadline", "head_timeout_s", "reused", "streamed")

    def __init__(self, head_timeout_s: float, *, streamed: bool) -> None:
        self.head_timeout_s = head_timeout_s
        # A streamed body arms the head deadline at its end; a bytes body as its head is sent (the same write).
        self.streamed = streamed
        self.deadline: asyncio.Timeout | None = None
        # A pooled connection was taken (aiohttp's `on_connection_reuseconn`): a drop before the answer is stale.
        self.reused = False
        self.answered = False
        # A streamed body stopped early because the answer came first: its connection cannot be reused.
        self.cut_short = False

    def sent(self) -> None:
        """The request is sent whole: the answer's head must now come within the head timeout."""
        if self.deadline is not None and not self.answered:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.head_timeout_s)


async def _on_reused(_session: aiohttp.ClientSession, context: SimpleNamespace, _params: object) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.reused = True


async def _on_headers_sent(_session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt) and not attempt.streamed:
        attempt.sent()


class AiohttpResponse:
    """An answer whose status and headers have arrived; `http_client.Response`'s surface over aiohttp's."""

    __slots__ = ("_attempt", "_pool", "_response", "content_length", "headers", "status")

    def __init__(self, pool: AiohttpPool, response: aiohttp.ClientResponse, attempt: _Attempt) -> None:
        self._pool = pool
        self._response = response
        self._attempt = attempt
        self.status = response.status
        found = response.headers
        self.headers = {name: value for name in KEPT_HEADERS if (value := found.get(name)) is not None}
        self.content_length = response.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever has arrived since the last chunk, in one piece."""
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._pool.translate(exc, self._attempt, answered=True) from exc

    async def read(self, limit: int = MAX_RESPONSE_BODY_BYTES) -> bytes:
        """The whole body, bounded as the builtin client bounds it (`read_bounded`)."""
        return await read_bounded(self.chunks(), self.content_length, limit, self._response.close)

    def release(self) -> None:
        """Back to the pool if the body was read to its end (and the request sent whole), else closed."""
        if self._attempt.cut_short or not self._response.content.at_eof():
            self._response.close()
        else:
            self._response.release()


class AiohttpPool:
    """Keep-alive connections to the origin of `url` on one aiohttp session. Belongs to the event loop it is created
    on; arguments as `http_client.ConnectionPool`'s."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_s: float,
        max_idle: int,
        head_timeout_s: float | None = None,
        proxies: EgressProxies | None = None,
    ) -> None:
        origin = Origin.of(url)
        self.host, self.port, self.authority = origin.host, origin.port, origin.authority
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._origin = f"{origin.scheme}://{host}" + origin.authority.removeprefix(origin.host)
        self.ssl = tls_context() if origin.tls else None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.head_timeout_s = read_timeout_s if head_timeout_s is None else head_timeout_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle  # kept for the contract: aiohttp does not bound its idle connections
        self.proxy = (EgressProxies.from_environment() if proxies is None else proxies).for_url(url)
        self._proxy_url: str | None = None
        # The proxy's credentials: on CONNECT for an https:// origin (aiohttp's `proxy_headers` go there only), in
        # each request's own headers for an http:// one (absolute form), as ours sends them.
        self._proxy_headers: dict[str, str] | None = None
        self._request_proxy_header: tuple[str, str] | None = None
        if self.proxy is not None:
            logger.info("upstream %s through the egress proxy %s", self.authority, self.proxy.address)
            self._proxy_url = f"http://{self.proxy.address}"
            if self.proxy.authorization is not None and self.ssl is not None:
                self._proxy_headers = {"Proxy-Authorization": self.proxy.authorization}
            elif self.proxy.authorization is not None:
                self._request_proxy_header = ("proxy-authorization", self.proxy.authorization)
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_reuseconn.append(_on_reused)
        tracing.on_request_headers_sent.append(_on_headers_sent)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=keepalive_s, ssl=self.ssl if self.ssl is not None else False
            ),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s),
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=SKIPPED_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            read_bufsize=HIGH_WATER_BYTES,
            max_line_size=MAX_RESPONSE_HEAD_BYTES,
            max_field_size=MAX_HEADER_LINE_BYTES,
            max_headers=MAX_HEADER_LINES,
            trace_configs=[tracing],
        )

    def head(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], content_length: int | None
    ) -> PreparedRequest:
        """A request's method, URL and headers, with `Host` and `Content-Length` (chunked when the length is None;
        CR, LF and NUL dropped from values)."""
        prepared = {"host": self.authority}
        prepared.update((name, value.translate(_FORBIDDEN_IN_HEADERS)) for name, value in headers)
        if self._request_proxy_header is not None:
            name, value = self._request_proxy_header
            prepared[name] = value
        if content_length is not None:
            prepared["content-length"] = str(content_length)
        return PreparedRequest(method, self._origin + path, prepared)

    async def send(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes | StreamedBody = b""
    ) -> AiohttpResponse:
        length = len(body) if isinstance(body, bytes) else body.length
        return await self.request(self.head(method, path, headers, length), body)

    async def request(self, head: PreparedRequest, body: bytes | StreamedBody) -> AiohttpResponse:
        """Send a request on a pooled or new connection; its answer once the status and headers arrived."""
        attempt = _Attempt(self.head_timeout_s, streamed=isinstance(body, StreamedBody))
        if isinstance(body, StreamedBody) and body.started:
            raise RuntimeError("a streamed request body can be sent only once")
        data = self._upload(body, attempt) if isinstance(body, StreamedBody) else body
        try:
            async with asyncio.timeout(None) as deadline:
                attempt.deadline = deadline
                response = await self._session.request(
                    head.method,
                    head.url,
                    headers=head.headers,
                    data=data,
                    allow_redirects=False,
                    proxy=self._proxy_url,
                    proxy_headers=self._proxy_headers,
                    trace_request_ctx=attempt,
                )
                attempt.answered = True
        except TimeoutError as exc:
            if deadline.expired():
                raise ResponseHeadTimeout(
                    f"no whole answer head from the upstream within {self.head_timeout_s:g} s"
                ) from None
            raise self.translate(exc, attempt, answered=False) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self.translate(exc, attempt, answered=False) from exc
        if response.status == 407 and self.proxy is not None and self.ssl is None:
            # Proxy Authentication Required to an absolute-form request: the proxy's answer, not the origin's.
            response.close()
            error = ProxyRefused(self.proxy, 407, refused="the request")
            self.proxy_failed(error)
            raise error
        return AiohttpResponse(self, response, attempt)

    async def _upload(self, body: StreamedBody, attempt: _Attempt) -> AsyncIterator[bytes]:
        """Each piece of `body` as the connection drains (aiohttp awaits its writer's drain); stops early if the
        upstream answers first. The body is `started` once aiohttp takes its first piece (connected, head sent): a
        request that failed before may go again, as with ours."""
        body.started = True
        sent = 0
        async for piece in body.chunks:
            if attempt.answered:  # answered (a 413, say) mid-body: the rest is not sent, the connection not reused
                attempt.cut_short = True
                return
            sent += len(piece)
            if body.length is not None and sent > body.length:
                raise ValueError(f"the request body is longer than the {body.length} bytes its head announced")
            yield piece
        if body.length is not None and sent != body.length:
            raise ValueError(f"the request body had {sent} bytes, not the {body.length} its head announced")
        attempt.sent()

    async def aclose(self) -> None:
        await self._session.close()

    def translate(self, exc: BaseException, attempt: _Attempt, *, answered: bool) -> HTTPClientError:
        """aiohttp's exception as the `http_client` error it stands for (a proxy's failure logged once)."""
        proxy = self.proxy
        error: HTTPClientError
        if isinstance(exc, aiohttp.ClientHttpProxyError) and proxy is not None:
            error = ProxyRefused(proxy, exc.status)
        elif isinstance(exc, aiohttp.ClientProxyConnectionError) and proxy is not None:
            error = ProxyError(proxy, f"cannot be reached ({type(exc.os_error).__name__})")
        elif isinstance(exc, aiohttp.ConnectionTimeoutError):
            if proxy is None:
                return ConnectTimeout(f"no connection to {self.authority} within {self.connect_timeout_s:g} s")
            error = ProxyError(proxy, f"did not answer within {self.connect_timeout_s:g} s")
        elif isinstance(exc, aiohttp.ClientConnectorError):  # refused, unresolvable, TLS
            return ConnectFailed(f"cannot connect to {self.authority}: {type(exc.os_error).__name__}")
        elif isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
            return ReadTimeout("no data from the upstream within the read timeout")
        elif isinstance(exc, aiohttp.ClientResponseError):  # aiohttp's parser refused the answer
            if _caused_by(exc, LineTooLong):
                return ResponseHeadTooLarge(f"the upstream's answer head is over the bound: {exc.message}")
            return MalformedResponse("the upstream's answer is not valid HTTP/1.1")
        else:  # closed or reset before the answer was whole
            return ConnectionDropped(reused=attempt.reused, answered=answered)
        self.proxy_failed(error)
        return error

    def proxy_failed(self, error: ProxyError) -> None:
        """One warning per failure, naming the proxy by host:port (its credentials are in no message)."""
        logger.warning("cannot reach the upstream %s: %s", self.authority, error, extra={"proxy": error.proxy_address})


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in `exc`'s chain of causes (aiohttp wraps its parser's error twice)."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__
    return False
