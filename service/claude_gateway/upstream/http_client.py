"""A lean HTTP/1.1 client for one origin: a pool of keep-alive connections, each an asyncio protocol fed to
httptools' parser (llhttp, the parser of Node.js and of uvicorn).

The gateway sends one kind of request to one host and relays the answer's bytes, so a general-purpose client's
machinery (per-request sessions, cookie jars, redirect and proxy logic, header multidicts, trace hooks) was most of
its cost: profiled under load, aiohttp was 17% of the CPU per request and 11 KiB of the memory of each open stream.
Here a request is one write of prepared bytes; the answer's body is handed on in the chunks it arrived in.

- Connections are reused last-in first-out (the most recently used is the likeliest still open) and closed once
  idle longer than `keepalive_s`; at most `max_idle` wait idle. Open ones are not bounded here: the callers' upstream
  slots (`MAX_INFLIGHT_UPSTREAM`) bound them.
- Reading stops while the reader has more than `HIGH_WATER_BYTES` unread, so a slow client cannot make the gateway
  buffer a fast upstream's answer.
- `read_timeout_s` bounds the wait between two reads from the upstream (not the whole answer), as aiohttp's
  `sock_read` did; time when the reader, not the upstream, is behind is not counted. One timer per pool checks
  every connection awaiting the upstream a few times per timeout, rather than a timer per request.
- Only the headers the gateway reads are kept (`KEPT_HEADERS`).

Bounds, against a misbehaving upstream or middlebox (each failure is an `HTTPClientError` that `errors.classify`
maps): an answer's status line and headers may take `MAX_RESPONSE_HEAD_BYTES` and must arrive whole within
`head_timeout_s` of the request being sent, however slowly they trickle; `Response.read()` takes at most
`MAX_RESPONSE_BODY_BYTES` (a streamed body is read with `chunks()` under flow control and is not bounded here).

A request body is bytes (one write, for the small JSON bodies of Messages calls) or a `StreamedBody`: an async
iterable of bytes sent piece by piece as the connection drains (`pause_writing`/`resume_writing`), with its
`Content-Length` or chunked, never joined in memory.

Egress: the pool goes through the proxy `egress.EgressProxies` names for its URL (by default the environment's,
`HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`): to an https:// origin through a CONNECT tunnel, then TLS to the origin over
it (SNI and certificate checked for the origin); to an http:// origin with absolute-form requests. Either way
`Proxy-Authorization` carries the proxy URL's credentials, which appear nowhere else. A proxy that cannot be reached
or refuses the tunnel raises `ProxyError`, naming the proxy by host:port, and logs one warning.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import certifi
import httptools

from claude_gateway.upstream.egress import EgressProxies, Proxy

logger = logging.getLogger("claude_gateway.upstream")

# Headers of the answer the gateway reads: the request id it passes back, what the retry policy obeys, and what a
# relayed body is described by (a file's type and name; its length is `Response.content_length`).
KEPT_HEADERS = frozenset(
    {"request-id", "retry-after", "retry-after-ms", "x-should-retry", "content-type", "content-disposition"}
)
HIGH_WATER_BYTES = 64 * 1024
# An answer's status line and headers: Anthropic's are under 2 KiB, and common HTTP stacks refuse heads past 8 to
# 16 KiB by default (Node, h11, nginx's header buffers). 64 KiB leaves room for whatever a proxy adds; past it is a
# broken or hostile middlebox, and the bytes are not held.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
# A non-streamed answer read whole (`Response.read`): the largest Message Anthropic sends (128k output tokens, about
# 0.5 MiB of text, under 2 MiB as escaped JSON with its content blocks) sixteen times over. A larger one is refused
# and its connection closed rather than held in memory; streamed bodies (SSE, file contents) are not read whole.
MAX_RESPONSE_BODY_BYTES = 32 * 1024 * 1024
_FORBIDDEN_IN_HEADERS = str.maketrans("", "", "\r\n\0")


class HTTPClientError(Exception):
    """The upstream could not be reached, or its answer could not be read."""


class ConnectFailed(HTTPClientError):
    """No connection: refused, unresolvable, or its TLS handshake failed."""


class ConnectTimeout(ConnectFailed, TimeoutError):
    """No connection within the connect timeout."""


class ConnectionDropped(HTTPClientError):
    """The connection closed before the answer was whole."""

    def __init__(self, *, reused: bool, answered: bool) -> None:
        super().__init__("upstream connection closed before the answer was whole")
        # A pooled connection closed before any answer: most likely the upstream closed it as it was reused.
        self.stale = reused and not answered


class ProxyError(ConnectFailed):
    """The egress proxy could not be reached, or would not carry the request. Its message names the proxy by
    host:port and is fit to show a caller; the proxy's credentials are never in it."""

    def __init__(self, proxy: Proxy, problem: str) -> None:
        super().__init__(f"the egress proxy {proxy.address} {problem}")
        self.proxy_address = proxy.address


class ProxyRefused(ProxyError):
    """The proxy answered CONNECT (or, for an http:// upstream, the request) with a refusal: 407, 403, any non-2xx."""

    def __init__(self, proxy: Proxy, status: int, *, refused: str = "the tunnel") -> None:
        super().__init__(proxy, f"refused {refused} ({status})")
        self.status = status


class ReadTimeout(HTTPClientError, TimeoutError):
    """Nothing read from the upstream for the read timeout."""


class ResponseHeadTimeout(ReadTimeout):
    """The answer's status line and headers were not whole within the head timeout (however slowly they came)."""


class MalformedResponse(HTTPClientError):
    """The upstream's bytes are not HTTP/1.1."""


class ResponseHeadTooLarge(MalformedResponse):
    """The answer's status line and headers exceed `MAX_RESPONSE_HEAD_BYTES`."""


class ResponseTooLarge(HTTPClientError):
    """A body read whole exceeds its bound (`MAX_RESPONSE_BODY_BYTES`); its connection is closed."""


async def read_bounded(
    chunks: AsyncIterator[bytes], declared: int | None, limit: int, close: Callable[[], object]
) -> bytes:
    """A whole body of at most `limit` bytes: past it, `ResponseTooLarge`, the connection closed first (`close`) so
    that the rest is never read, at once when the declared length is over it, else as the count passes it."""
    if declared is not None and declared > limit:
        close()
        raise ResponseTooLarge(f"the upstream's answer is over {limit} bytes")
    body = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            close()
            raise ResponseTooLarge(f"the upstream's answer is over {limit} bytes")
        body.append(chunk)
    return b"".join(body)


class StreamedBody:
    """A request body sent as it is produced: `chunks` (an async iterable of bytes), with `length` bytes in all as
    its `Content-Length`, or chunked when the length is None. It can be sent once: `started` says whether any of it
    was taken (a request whose body was not started may go again, on another connection)."""

    __slots__ = ("chunks", "length", "started")

    def __init__(self, chunks: AsyncIterable[bytes], length: int | None = None) -> None:
        self.chunks = chunks
        self.length = length
        self.started = False


@dataclass(frozen=True, slots=True)
class Origin:
    """The upstream's scheme, host and port, from its base URL, as both pools address it."""

    scheme: str
    host: str
    port: int
    authority: str  # the Host header's value: the port only when it is not the scheme's own

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        authority = parts.hostname if port == default else f"{parts.hostname}:{port}"
        return cls(parts.scheme, parts.hostname, port, authority)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def tls_context() -> ssl.SSLContext:
    """The system's trusted CAs (and `SSL_CERT_FILE`), with certifi's bundle added as the SDK has it; HTTP/1.1."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class Response:
    """An answer whose status and headers have arrived; its body is read with `chunks()` or `read()`, and then
    `release()` gives the connection back to the pool (or closes it if the body was not read to its end)."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_complete",
        "_connection",
        "_error",
        "_waiter",
        "content_length",
        "headers",
        "status",
    )  # fmt: skip

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        # The body's length as the upstream declared it, if it did.
        self.content_length: int | None = None
        self._connection = connection
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever has arrived since the last chunk, in one piece."""
        while True:
            if self._buffer:
                buffer = self._buffer
                data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
                buffer.clear()
                self._buffered = 0
                self._connection.resume()
                yield data
            elif self._complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    async def read(self, limit: int = MAX_RESPONSE_BODY_BYTES) -> bytes:
        """The whole body, bounded (`read_bounded`)."""
        return await read_bounded(self.chunks(), self.content_length, limit, self._connection.close)

    def release(self) -> None:
        self._connection.finished(self)

    async def _wait(self) -> None:
        waiter = self._waiter = self._connection.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER_BYTES:
            self._connection.pause()
        self._wake()

    def _finish(self) -> None:
        if self._error is None:  # an answer that already failed (timed out, malformed) stays failed
            self._complete = True
            self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One connection to the upstream; at most one request on it at a time."""

    __slots__ = (
        "drain_waiter",
        "framed",
        "head",
        "head_bytes",
        "head_deadline",
        "head_lines_bytes",
        "idle_since",
        "interim",
        "keep_alive",
        "last_read",
        "loop",
        "parser",
        "paused",
        "pool",
        "requests",
        "response",
        "transport",
        "writing_paused",
    )  # fmt: skip

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        # Set while the status line and headers are awaited.
        self.head: asyncio.Future[Response] | None = None
        # Bytes received while the answer's head is not whole, and when it must be (0: no deadline running).
        self.head_bytes = 0
        # The answer's header lines as the parser hands them over: a head that arrives whole in one or two reads is
        # bounded by this count, one that never ends by `head_bytes`.
        self.head_lines_bytes = 0
        self.head_deadline = 0.0
        self.requests = 0
        self.idle_since = 0.0
        self.last_read = 0.0
        self.paused = False
        self.keep_alive = False
        # Whether the answer says where its body ends (Content-Length, chunked); if not, the close ends it.
        self.framed = False
        # Set while an interim (1xx) answer is parsed: it is skipped, the final answer follows.
        self.interim = False
        # Flow control of a streamed request body: the transport's buffer is over its high-water mark.
        self.writing_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport subclasses, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        response = self.response
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(MalformedResponse("the upstream's answer is not valid HTTP/1.1"))
            self.close()
            return
        # Counted by whole reads, after the parser had them: httptools gathers a header split across reads in memory,
        # so a head past the bound must be cut off here rather than once a header is whole.
        if response is not None and response.status == 0:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_RESPONSE_HEAD_BYTES:
                self._fail(ResponseHeadTooLarge(f"the upstream's answer head is over {MAX_RESPONSE_HEAD_BYTES} bytes"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self._wake_writer()
        response = self.response
        answered = response is not None and response.status != 0
        if response is not None and answered and not self.framed and exc is None:
            response._finish()  # a body delimited by the close, as HTTP/1.0 and `Connection: close` answers may be
        else:
            self._fail(ConnectionDropped(reused=self.requests > 1, answered=answered))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    # -- httptools callbacks ----------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_lines_bytes += len(name) + len(value) + 4  # name, ": ", value, CRLF
        key = name.decode("latin-1").lower()
        if key in KEPT_HEADERS and self.response is not None:
            self.response.headers[key] = value.decode("latin-1")
        elif key == "content-length":
            self.framed = True
            if self.response is not None and value.isdigit():
                self.response.content_length = int(value)
        elif key == "transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        if self.head_lines_bytes > MAX_RESPONSE_HEAD_BYTES:
            self._fail(ResponseHeadTooLarge(f"the upstream's answer head is over {MAX_RESPONSE_HEAD_BYTES} bytes"))
            self.close()
            return
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: not the answer
            self.interim = True
            self.framed = False
            response.headers.clear()
            response.content_length = None
            return
        if (
            status == 407 and self.pool.proxy is not None
        ):  # Proxy Authentication Required: the proxy's, not the origin's
            error = ProxyRefused(self.pool.proxy, status, refused="the request")
            self.pool.proxy_failed(error)
            self._fail(error)
            self.close()
            return
        response.status = status
        self.head_deadline = 0.0
        self.keep_alive = self.parser.should_keep_alive()
        if self.head is not None and not self.head.done():
            self.head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.pool.answered(self)
        if self.response is not None:
            self.response._finish()

    # -- requests ---------------------------------------------------------------------------------------------------

    async def request(self, head: bytes, body: bytes | StreamedBody) -> Response:
        assert self.transport is not None
        self.requests += 1
        self.framed = self.interim = False
        self.head_bytes = self.head_lines_bytes = 0
        self.head_deadline = 0.0
        self.response = Response(self)
        self.head = self.loop.create_future()
        self.last_read = self.loop.time()
        self.pool.awaiting(self)
        try:
            if isinstance(body, bytes):
                self.transport.write(head + body if len(body) < HIGH_WATER_BYTES else head)
                if len(body) >= HIGH_WATER_BYTES:
                    self.transport.write(body)
                self.sent()
            else:
                self.transport.write(head)
                await self._send_streamed(body)
            return await self.head
        except BaseException:
            # Failed, timed out or cancelled before an answer: this connection's state is unknown.
            self.close()
            raise
        finally:
            self.head = None

    async def _send_streamed(self, body: StreamedBody) -> None:
        """Each piece of `body` as the connection drains; stops early if the upstream answers (or fails) first."""
        if body.started:
            raise RuntimeError("a streamed request body can be sent only once")
        body.started = True
        assert self.transport is not None
        assert self.head is not None
        chunked = body.length is None
        sent = 0
        async for piece in body.chunks:
            if self.head.done() or not self.usable:
                # Answered (a 413, say) or failed mid-body: the rest is not sent, and the connection is not reused.
                self.keep_alive = False
                return
            if not piece:
                continue
            sent += len(piece)
            if body.length is not None and sent > body.length:
                raise ValueError(f"the request body is longer than the {body.length} bytes its head announced")
            if chunked:
                self.transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
            else:
                self.transport.write(piece)
            self.last_read = self.loop.time()  # progress: the read timeout counts from the last piece sent
            if self.writing_paused:
                await self._drain()
        if body.length is not None and sent != body.length:
            raise ValueError(f"the request body had {sent} bytes, not the {body.length} its head announced")
        if chunked and self.usable:
            self.transport.write(b"0\r\n\r\n")
        self.sent()

    async def _drain(self) -> None:
        waiter = self.drain_waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.drain_waiter = None
        self.last_read = self.loop.time()

    def _wake_writer(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def sent(self) -> None:
        """The request is sent whole: its answer's head must now come within the head timeout."""
        if self.response is not None and self.response.status == 0:
            self.head_deadline = self.loop.time() + self.pool.head_timeout_s

    def finished(self, response: Response) -> None:
        """The reader is done with `response`: reuse the connection if the answer was read whole, else close it."""
        if response is not self.response:
            return
        self.response = None
        if response._complete and self.keep_alive and self.usable and not self.paused:
            self.pool.put_back(self)
        else:
            self.close()

    @property
    def usable(self) -> bool:
        """Connected, and not closing: a transport closes as its connection is lost, or at once when we ask (though
        `connection_lost` comes only on the next loop iteration)."""
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_read = self.loop.time()
            self.transport.resume_reading()

    def _fail(self, error: BaseException) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        elif self.response is not None:
            self.response._fail(error)

    def check_timeouts(self, now: float) -> None:
        """The head deadline, then the read timeout: a failure ends the answer and closes the connection."""
        error: HTTPClientError | None = None
        if self.head_deadline and now >= self.head_deadline:
            error = ResponseHeadTimeout(f"no whole answer head from the upstream within {self.pool.head_timeout_s:g} s")
        elif self.paused:  # the reader is behind, not the upstream
            self.last_read = now
        elif now - self.last_read >= self.pool.read_timeout_s:
            error = ReadTimeout("no data from the upstream within the read timeout")
        if error is not None:
            self.pool.answered(self)
            self._fail(error)
            self.close()


class ConnectionPool:
    """Keep-alive connections to the origin of `url`. Belongs to the event loop it is created on.

    `head_timeout_s` (default: `read_timeout_s`) bounds the wait for an answer's status line and headers once the
    request is sent whole. `proxies` says which egress proxy to use (default: the environment's, read once here;
    `egress.DIRECT` for none)."""

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
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.authority = origin.host, origin.port, origin.authority
        self.ssl = tls_context() if origin.tls else None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.head_timeout_s = read_timeout_s if head_timeout_s is None else head_timeout_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self.proxy = (EgressProxies.from_environment() if proxies is None else proxies).for_url(url)
        # Through a proxy, an http:// request names its origin in full (absolute form) and carries the credentials;
        # an https:// one goes through a tunnel and is sent as it would be directly.
        self._target = ""
        self._proxy_header = ""
        if self.proxy is not None:
            logger.info("upstream %s through the egress proxy %s", self.authority, self.proxy.address)
        if self.proxy is not None and self.ssl is None:
            self._target = f"http://{self.authority}"
            if self.proxy.authorization is not None:
                self._proxy_header = f"proxy-authorization: {self.proxy.authorization}"
        self._idle: list[_Connection] = []
        # Connections whose answer is not yet whole, checked for the read timeout by one timer.
        self._awaiting: set[_Connection] = set()
        self._sweep_every_s = min(1.0, read_timeout_s / 4, self.head_timeout_s / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def head(self, method: str, path: str, headers: Iterable[tuple[str, str]], content_length: int | None) -> bytes:
        """A request's line and headers, with `Host` and `Content-Length` (chunked when the length is None; CR, LF
        and NUL dropped from values)."""
        lines = [f"{method} {self._target}{path} HTTP/1.1", f"host: {self.authority}"]
        lines.extend(f"{name}: {value.translate(_FORBIDDEN_IN_HEADERS)}" for name, value in headers)
        if self._proxy_header:
            lines.append(self._proxy_header)
        lines.append("transfer-encoding: chunked" if content_length is None else f"content-length: {content_length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def request(self, head: bytes, body: bytes | StreamedBody) -> Response:
        """Send a request (a `head()` and its body) on a pooled or new connection; its answer once the status and
        headers arrived."""
        connection = self._take_idle() or await self._connect()
        return await connection.request(head, body)

    async def send(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes | StreamedBody = b""
    ) -> Response:
        """`request()` with its head made here: the length from the bytes, or the streamed body's own."""
        length = len(body) if isinstance(body, bytes) else body.length
        return await self.request(self.head(method, path, headers, length), body)

    async def aclose(self) -> None:
        """Close the idle connections; answers still being read keep theirs (and their read timeout) to the end.
        Idle ones are aborted: a TLS close would wait on the upstream's reply while the event loop may be stopping,
        and an idle HTTP/1.1 connection has nothing to lose."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.abort()

    def put_back(self, connection: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        self._idle.append(connection)
        self._arm_sweeper()

    def forget(self, connection: _Connection) -> None:
        self._awaiting.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    def awaiting(self, connection: _Connection) -> None:
        self._awaiting.add(connection)
        self._arm_sweeper()

    def answered(self, connection: _Connection) -> None:
        self._awaiting.discard(connection)

    def _arm_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_every_s, self._sweep)

    def _sweep(self) -> None:
        """Head deadlines and read timeouts of the connections awaiting the upstream; idle connections past
        `keepalive_s` closed (the oldest are at the bottom of the stack)."""
        self._sweeper = None
        now = self.loop.time()
        for connection in list(self._awaiting):
            connection.check_timeouts(now)
        while self._idle and now - self._idle[0].idle_since > self.keepalive_s:
            self._idle.pop(0).close()
        if self._awaiting or self._idle:
            self._arm_sweeper()

    def _take_idle(self) -> _Connection | None:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since <= self.keepalive_s:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        proxy = self.proxy
        reaching_proxy = proxy is not None  # until the proxy has answered, a timeout is the proxy's
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if proxy is None:
                    _, protocol = await self.loop.create_connection(
                        lambda: _Connection(self), self.host, self.port, ssl=self.ssl
                    )
                elif self.ssl is None:
                    _, protocol = await self._connect_to_proxy(proxy)
                else:
                    tunnel = await self._open_tunnel(proxy)
                    reaching_proxy = False
                    try:
                        _, protocol = await self.loop.create_connection(
                            lambda: _Connection(self), sock=tunnel, ssl=self.ssl, server_hostname=self.host
                        )
                    except BaseException:
                        tunnel.close()
                        raise
        except ProxyError as exc:
            self.proxy_failed(exc)
            raise
        except TimeoutError:
            if proxy is not None and reaching_proxy:
                error = ProxyError(proxy, f"did not answer within {self.connect_timeout_s:g} s")
                self.proxy_failed(error)
                raise error from None
            raise ConnectTimeout(f"no connection to {self.authority} within {self.connect_timeout_s:g} s") from None
        except OSError as exc:  # refused, unresolvable, unreachable, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"cannot connect to {self.authority}: {type(exc).__name__}") from None
        return protocol

    def proxy_failed(self, error: ProxyError) -> None:
        """One warning per failure, naming the proxy by host:port (its credentials are in no message)."""
        logger.warning("cannot reach the upstream %s: %s", self.authority, error, extra={"proxy": error.proxy_address})

    async def _connect_to_proxy(self, proxy: Proxy) -> tuple[asyncio.BaseTransport, _Connection]:
        try:
            return await self.loop.create_connection(lambda: _Connection(self), proxy.host, proxy.port)
        except OSError as exc:
            raise ProxyError(proxy, f"cannot be reached ({type(exc).__name__})") from None

    async def _open_tunnel(self, proxy: Proxy) -> socket.socket:
        """A socket to the proxy on which CONNECT to the origin succeeded, for TLS to the origin to begin on."""
        try:
            sock = await self._proxy_socket(proxy)
        except OSError as exc:
            raise ProxyError(proxy, f"cannot be reached ({type(exc).__name__})") from None
        try:
            authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
            if proxy.authorization is not None:
                lines.append(f"proxy-authorization: {proxy.authorization}")
            await self.loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await self._await_tunnel(sock, proxy)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _proxy_socket(self, proxy: Proxy) -> socket.socket:
        error = OSError(f"{proxy.address} does not resolve")
        addresses = await self.loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await self.loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

    async def _await_tunnel(self, sock: socket.socket, proxy: Proxy) -> None:
        """Read the proxy's answer to CONNECT up to its blank line; a 2xx opens the tunnel, anything else refuses it."""
        received = bytearray()
        while b"\r\n\r\n" not in received:
            # Past the status line, a byte at a time: what follows the blank line is the origin's, not ours to take.
            # A few dozen reads, once per new connection.
            data = await self.loop.sock_recv(sock, 1 if b"\r\n" in received else 32)
            if not data:
                raise ProxyError(proxy, "closed the connection before answering CONNECT")
            received += data
            if len(received) > MAX_RESPONSE_HEAD_BYTES:
                raise ProxyError(proxy, f"answered CONNECT with a head over {MAX_RESPONSE_HEAD_BYTES} bytes")
        version, _, rest = bytes(received).partition(b" ")
        status = rest[:3]
        if not version.startswith(b"HTTP/1.") or not status.isdigit():
            raise ProxyError(proxy, "answered CONNECT with bytes that are not HTTP")
        if not 200 <= int(status) < 300:
            raise ProxyRefused(proxy, int(status))
        if not received.endswith(b"\r\n\r\n"):
            raise ProxyError(proxy, "sent bytes of its own after opening the tunnel")
