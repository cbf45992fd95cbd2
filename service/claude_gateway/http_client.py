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
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import urlsplit

import certifi
import httptools

# Headers of the answer the gateway reads: the request id it passes back, and what the retry policy obeys.
KEPT_HEADERS = frozenset({"request-id", "retry-after", "retry-after-ms", "x-should-retry"})
HIGH_WATER_BYTES = 64 * 1024
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


class ReadTimeout(HTTPClientError, TimeoutError):
    """Nothing read from the upstream for the read timeout."""


class MalformedResponse(HTTPClientError):
    """The upstream's bytes are not HTTP/1.1."""


def tls_context() -> ssl.SSLContext:
    """The system's trusted CAs (and `SSL_CERT_FILE`), with certifi's bundle added as the SDK has it; HTTP/1.1."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class Response:
    """An answer whose status and headers have arrived; its body is read with `chunks()` or `read()`, and then
    `release()` gives the connection back to the pool (or closes it if the body was not read to its end)."""

    __slots__ = ("_buffer", "_buffered", "_complete", "_connection", "_error", "_waiter", "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
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

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

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
        "framed",
        "head",
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
    )  # fmt: skip

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        # Set while the status line and headers are awaited.
        self.head: asyncio.Future[Response] | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.last_read = 0.0
        self.paused = False
        self.keep_alive = False
        # Whether the answer says where its body ends (Content-Length, chunked); if not, the close ends it.
        self.framed = False
        # Set while an interim (1xx) answer is parsed: it is skipped, the final answer follows.
        self.interim = False

    # -- asyncio.Protocol -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport subclasses, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(MalformedResponse("the upstream's answer is not valid HTTP/1.1"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        response = self.response
        answered = response is not None and response.status != 0
        if response is not None and answered and not self.framed and exc is None:
            response._finish()  # a body delimited by the close, as HTTP/1.0 and `Connection: close` answers may be
        else:
            self._fail(ConnectionDropped(reused=self.requests > 1, answered=answered))

    # -- httptools callbacks ----------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in KEPT_HEADERS and self.response is not None:
            self.response.headers[key] = value.decode("latin-1")
        elif key in ("content-length", "transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: not the answer
            self.interim = True
            self.framed = False
            response.headers.clear()
            return
        response.status = status
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

    async def request(self, head: bytes, body: bytes) -> Response:
        assert self.transport is not None
        self.requests += 1
        self.framed = self.interim = False
        self.response = Response(self)
        self.head = self.loop.create_future()
        self.last_read = self.loop.time()
        self.pool.awaiting(self)
        self.transport.write(head + body if len(body) < HIGH_WATER_BYTES else head)
        if len(body) >= HIGH_WATER_BYTES:
            self.transport.write(body)
        try:
            return await self.head
        except BaseException:
            # Failed, timed out or cancelled before an answer: this connection's state is unknown.
            self.close()
            raise
        finally:
            self.head = None

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

    def check_read_timeout(self, now: float) -> None:
        if self.paused:  # the reader is behind, not the upstream
            self.last_read = now
        elif now - self.last_read >= self.pool.read_timeout_s:
            self.pool.answered(self)
            self._fail(ReadTimeout("no data from the upstream within the read timeout"))
            self.close()


class ConnectionPool:
    """Keep-alive connections to the origin of `url`. Belongs to the event loop it is created on."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_s: float,
        max_idle: int,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.loop = asyncio.get_running_loop()
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self.authority = self.host if default_port else f"{self.host}:{self.port}"
        self.ssl = tls_context() if parts.scheme == "https" else None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        # Connections whose answer is not yet whole, checked for the read timeout by one timer.
        self._awaiting: set[_Connection] = set()
        self._sweep_every_s = min(1.0, read_timeout_s / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def head(self, method: str, path: str, headers: Iterable[tuple[str, str]], content_length: int) -> bytes:
        """A request's line and headers, with `Host` and `Content-Length` (CR, LF and NUL dropped from values)."""
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.authority}"]
        lines.extend(f"{name}: {value.translate(_FORBIDDEN_IN_HEADERS)}" for name, value in headers)
        lines.append(f"content-length: {content_length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def request(self, head: bytes, body: bytes) -> Response:
        """Send a request (a `head()` and its body) on a pooled or new connection; its answer once the status and
        headers arrived."""
        connection = self._take_idle() or await self._connect()
        return await connection.request(head, body)

    async def aclose(self) -> None:
        """Close the idle connections; answers still being read keep theirs (and their read timeout) to the end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

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
        """Read timeouts of the connections awaiting the upstream; idle connections past `keepalive_s` closed (the
        oldest are at the bottom of the stack)."""
        self._sweeper = None
        now = self.loop.time()
        for connection in list(self._awaiting):
            connection.check_read_timeout(now)
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
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await self.loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {self.authority} within {self.connect_timeout_s:g} s") from None
        except OSError as exc:  # refused, unresolvable, unreachable, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"cannot connect to {self.authority}: {type(exc).__name__}") from None
        return protocol
