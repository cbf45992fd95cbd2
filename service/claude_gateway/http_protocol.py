"""uvicorn's httptools protocol with the bounds on a connection that uvicorn lacks, from its first byte to its last.

The one module that touches uvicorn's internals: uvicorn has no public hook for a request's size or time, nor for
telling an app its client left other than `receive()`. Written for uvicorn 0.54.0 and checked against 0.55.0 (the
latest when written), with httptools 0.9; pyproject.toml pins uvicorn to >=0.54,<0.56 to match. What it relies on,
each guarded by a canary test in tests/canary/test_uvicorn_protocol.py:
- `HttpToolsProtocol`'s methods `connection_made`, `connection_lost`, `data_received` (asyncio's), the httptools
  parser callbacks `on_message_begin`, `on_header`, `on_headers_complete`, `on_body`, `on_message_complete`, and
  `on_response_complete` (which the cycle calls when a response is sent), each called with the arguments they take
  here; `_unset_keepalive_if_required()`, which cancels its keep-alive timer;
- its attributes `cycle` (the current `RequestResponseCycle`, with `scope`, `transport`, `message_event`,
  `response_started`, `response_complete` and `disconnected`), `scope`, `url`, `headers`, `app` (read once per
  request in `on_headers_complete`), `app_state` (the lifespan state, where the gateway keeps its `settings`),
  `transport`, `flow` and `loop`;
- that the cycle calls only `write`, `close` and `is_closing` on its `transport`, and `close()` when a response
  with `connection: close` is complete (so a stand-in there can turn that close into a lingering one);
- that `on_headers_complete` only schedules the ASGI task (`loop.create_task`), so the scope can still be changed
  after it returns and before the app first sees it.

The bounds, each a phase of the connection (`Phase`) with one timer:
- The head (`HEAD`). Size: httptools accepts a request line and headers of any size, buffering each header whole
  before uvicorn sees it (a 30 MB header costs 30 MB per connection). Past `MAX_REQUEST_HEAD_BYTES` the answer is
  431 and the connection is closed: while the head is still arriving (counted by the read, so within one read of
  the bound), and once it is whole (counted exactly, for a head that came in one read). Time: uvicorn's only timer
  is the keep-alive one, armed after a response; past `REQUEST_HEAD_TIMEOUT_S` without a whole head the connection
  is closed.
- Everything after the head (`BODY`), whether or not the app reads it. Size: the body (counted exactly, as the
  parser hands it over) may not pass the app's `MAX_BODY_BYTES`, and what comes between two pieces of body or after
  the last (a chunk's size line, trailers) may not pass `MAX_TRAILER_BYTES`: httptools buffers each trailer line
  whole, and uvicorn appended every trailer to the request's headers (64 MiB of trailer lines grew a worker from
  125 to 199 MiB); trailers are now dropped. Time: the whole message must be in within the app's `BODY_TIMEOUT_S`
  of its head's end (uvicorn has no body timeout, and the middleware's ran only while the app read the body: a
  body trickled a chunk every 25 s held its connection for ever).
- A refusal (`REFUSED`): past either bound, the parser is fed no more, and the app is told through the request's
  extension (`refused`: 413 or 408) and woken from `receive()`: it answers in the route's own error shape and
  counts the answer in its metrics. An app that does not answer within `REFUSAL_GRACE_S` (it is not reading the
  body) is cut off, and the protocol answers for it. A response already started is cut short instead.
- A lingering close (`LINGER`): a response with `connection: close` sent before the request's body was all in (a
  413 from the Content-Length, a refusal) would be destroyed by a reset if the connection closed while the client
  was still sending: closing a socket with unread data resets it. As nginx's `lingering_close`, the write side is shut after
  the response and the rest of the request is read and discarded, until the client closes, or for at most
  `LINGERING_TIME_S` and `LINGERING_MAX_BYTES`; then the connection is closed. A response kept alive (a 401, a
  405) is followed instead by the rest of the request, read and discarded under the body's bounds, as uvicorn (and
  nginx) do, so that the client may reuse the connection.

It also tells the app when a client leaves mid-answer without the app having to wait on `receive()` for
`http.disconnect`: each request's scope carries `scope["extensions"][DISCONNECT_EXTENSION]` (ASGI extensions are
dicts), whose `callbacks` are run as its connection is lost and whose `disconnected` turns true then, for a stream
that registers only after its client already left (while it waited for a slot or for Anthropic's headers). A stream registers one instead of keeping a task waiting on `receive()` for its
whole life, which cost a task and a chain of middleware frames per open stream.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from claude_gateway.settings import Settings

# nginx's default large_client_header_buffers is 4 x 8 KiB; 64 KiB leaves room for long JWTs and cookies.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
# From a connection's opening (or a keep-alive request's first byte) to its last header line. Clients and ingress
# controllers send a head in one write; nginx's client_header_timeout is 60 s, but nothing legitimate needs that.
REQUEST_HEAD_TIMEOUT_S = 20.0
# Bytes that are not body between two pieces of a request's body, or after its last (a chunk's size line and
# extensions; the trailers). A size line takes a few bytes and nothing the gateway serves sends trailers; 8 KiB is
# what nginx allows a header line and half what Node allows its headers and trailers together.
MAX_TRAILER_BYTES = 8 * 1024
# Once refused, how long the app has to answer in its own shape. An app reading the body answers within a turn of
# the event loop; one that is not reading it (busy elsewhere) is cut off after this, and the protocol answers.
REFUSAL_GRACE_S = 1.0
# nginx lingers 5 s for each read (lingering_timeout) and 30 s in all; a bound in all is what a connection's cost
# needs. 5 s is enough for a client on a 10 MB/s link to finish sending a body up to twice MAX_BODY_BYTES's
# default, the usual size of a body refused at the bound; 32 MiB bounds what one refused client makes us read.
LINGERING_TIME_S = 5.0
LINGERING_MAX_BYTES = 32 * 1024 * 1024

DISCONNECT_EXTENSION = "claude_gateway.on_disconnect"

_TOO_LARGE_BODY = b'{"detail":"Request header fields too large"}'
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n"
    b"\r\n" % len(_TOO_LARGE_BODY)
) + _TOO_LARGE_BODY
_TOO_LARGE_HEADERS = [(b"content-type", b"application/json"), (b"connection", b"close")]


def _plain_answer(status: int, reason: str, detail: str) -> bytes:
    """A whole response, for a refusal the app did not answer (in the plain error shape: the app, which knows each
    route's shape, answers every refusal it reads)."""
    body = b'{"detail":"%s"}' % detail.encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, reason.encode(), len(body))
    ) + body


BODY_TOO_LARGE = 413
BODY_TIMEOUT = 408
_REFUSALS = {
    BODY_TOO_LARGE: _plain_answer(413, "Content Too Large", "Request body too large"),
    BODY_TIMEOUT: _plain_answer(408, "Request Timeout", "Request body not received in time"),
}


async def head_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    """The app a whole but oversized head is handed to instead of the gateway (as uvicorn does past
    `limit_concurrency`), so that uvicorn finishes the exchange and closes the connection its own way."""
    await send({"type": "http.response.start", "status": 431, "headers": _TOO_LARGE_HEADERS})
    await send({"type": "http.response.body", "body": _TOO_LARGE_BODY})


class DisconnectExtension(TypedDict):
    callbacks: list[Callable[[], None]]
    disconnected: bool
    # 0, or the status the request's body was refused with (BODY_TOO_LARGE, BODY_TIMEOUT): the app answers it.
    refused: int


def disconnect_extension(scope: Scope) -> DisconnectExtension | None:
    """The request's disconnect extension, when the server provides it (this protocol does; others may not)."""
    return (scope.get("extensions") or {}).get(DISCONNECT_EXTENSION)


class Phase(enum.Enum):
    HEAD = "head"  # a head is expected or arriving
    BODY = "body"  # the head is whole, the rest of the message is not
    IDLE = "idle"  # the message is whole (its answer may still be running; keep-alive is uvicorn's)
    REFUSED = "refused"  # past a body bound: nothing more is parsed, the app has been told
    LINGER = "linger"  # answered before the message was whole: write side shut, the rest read and discarded


@dataclass(frozen=True, slots=True)
class Uploads:
    """Requests whose body is a file upload, streamed on by their route (`POST /v1/files`): bounded by their own
    size and deadline rather than MAX_BODY_BYTES and BODY_TIMEOUT_S. The app's lifespan state names them
    (`uploads`), as it holds the settings, so that this module imports no route."""

    routes: frozenset[tuple[bytes, bytes]]
    max_bytes: int
    timeout_s: float


class _Bounds:
    """Where the connection stands against its bounds. One attribute on the protocol rather than several: uvicorn's
    protocol already has 28, and CPython keeps an object's attributes compact only up to 30 (past that, each
    connection's attribute dict takes 1.5 KiB instead of 300 bytes)."""

    __slots__ = (
        "began_in_feed",
        "body",
        "body_timeout_s",
        "cycle_transport",
        "discarded",
        "gap",
        "head_size",
        "max_body_bytes",
        "phase",
        "read_had_body",
        "request_max_bytes",
        "request_timeout_s",
        "timer",
        "uploads",
    )

    def __init__(self, max_body_bytes: int, body_timeout_s: float, uploads: Uploads | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        # The routes that take an upload (method, path) with their own bounds (FILES_MAX_BYTES, its deadline).
        self.uploads = uploads
        # The current request's bounds: the connection's, or an upload's.
        self.request_max_bytes = max_body_bytes
        self.request_timeout_s = body_timeout_s
        self.phase = Phase.HEAD
        self.head_size = 0
        self.began_in_feed = False
        self.body = 0  # body bytes of the current message
        self.gap = 0  # bytes since the last piece of body (size lines, trailers), counted by the read
        self.read_had_body = False
        self.discarded = 0  # bytes read and thrown away since the refusal or the answer
        self.timer: asyncio.TimerHandle | None = None
        self.cycle_transport: _CycleTransport | None = None


class _CycleTransport:
    """What uvicorn's request cycle holds as its transport: the connection's own, except that closing it after a
    response sent before the request was whole lingers (`GatewayHttpProtocol._close_after_response`)."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: GatewayHttpProtocol, transport: asyncio.Transport) -> None:
        self._protocol: GatewayHttpProtocol | None = protocol
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._protocol is None:
            self._transport.close()
        else:
            self._protocol._close_after_response()

    def detach(self) -> None:
        """Once the connection is lost: a plain transport again, holding no reference back to its protocol."""
        self._protocol = None

    def __getattr__(self, name: str) -> Any:
        # Anything else a later uvicorn might call goes to the real transport (the canary says when it does).
        return getattr(self._transport, name)


_DEFAULT_MAX_BODY_BYTES: int = Settings.model_fields["max_body_bytes"].default
_DEFAULT_BODY_TIMEOUT_S: float = Settings.model_fields["body_timeout_s"].default


class GatewayHttpProtocol(HttpToolsProtocol):
    # Class attributes so that a test can shorten them in a subclass.
    head_timeout_s = REQUEST_HEAD_TIMEOUT_S
    max_head_bytes = MAX_REQUEST_HEAD_BYTES
    refusal_grace_s = REFUSAL_GRACE_S
    lingering_time_s = LINGERING_TIME_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The app's own bounds, from the settings its lifespan keeps in its state (uvicorn hands that state to every
        # connection); an app without them (a test's) gets the settings' defaults.
        settings = self.app_state.get("settings")
        if isinstance(settings, Settings):
            uploads = self.app_state.get("uploads")
            self._bounds = _Bounds(
                settings.max_body_bytes, settings.body_timeout_s, uploads if isinstance(uploads, Uploads) else None
            )
        else:
            self._bounds = _Bounds(_DEFAULT_MAX_BODY_BYTES, _DEFAULT_BODY_TIMEOUT_S)
        super().connection_made(transport)
        self._bounds.cycle_transport = _CycleTransport(self, transport)
        self._arm(self.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._bounds.cycle_transport is not None:
            self._bounds.cycle_transport.detach()
        cycle = self.cycle
        extension = None if cycle is None or cycle.response_complete else disconnect_extension(cast(Scope, cycle.scope))
        super().connection_lost(exc)
        if extension is not None:
            extension["disconnected"] = True
            for callback in extension["callbacks"]:
                callback()

    def data_received(self, data: bytes) -> None:
        bounds = self._bounds
        phase = bounds.phase
        if phase is Phase.REFUSED or phase is Phase.LINGER:
            self._discard(len(data))
            return
        bounds.began_in_feed = False
        bounds.read_had_body = False
        gap = bounds.gap
        super().data_received(data)
        if self.transport.is_closing():
            return
        if bounds.phase is Phase.HEAD:
            # A read in which a head began is not counted (it may hold the end of the previous request's body), so
            # the bound holds to within one read; every other read made while a head is incomplete is all head.
            if not bounds.began_in_feed:
                bounds.head_size += len(data)
                if bounds.head_size > self.max_head_bytes:
                    self._disarm()
                    self.transport.write(_TOO_LARGE)
                    self.transport.close()
        elif bounds.phase is Phase.BODY:
            # A read that began after the head and handed over no body is all gap. In one that did (or that ended
            # the head), the gap is what came after the last piece of body: trailer lines, counted whole as the
            # parser hands them over; a line not yet ended is counted by the next read (so to within one read).
            if phase is Phase.BODY and not bounds.read_had_body:
                bounds.gap = gap + len(data)
            if bounds.body > bounds.request_max_bytes or bounds.gap > MAX_TRAILER_BYTES:
                self._refuse(BODY_TOO_LARGE)
            elif bounds.timer is None:
                # Armed only for a message still incomplete after the read that ended its head: most bodies come
                # with their head, and cost no timer.
                self._arm(bounds.request_timeout_s)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        bounds = self._bounds
        bounds.phase = Phase.HEAD
        bounds.head_size = 0
        bounds.began_in_feed = True
        bounds.body = 0
        bounds.gap = 0
        if bounds.timer is None:  # a new connection's timer runs from its opening
            self._arm(self.head_timeout_s)

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the head, a header is a trailer: uvicorn would append it to the request's headers, which the app
        # has already been handed. ASGI has no request trailers; they are dropped (and counted as gap).
        bounds = self._bounds
        if bounds.phase is Phase.HEAD:
            super().on_header(name, value)
        else:
            bounds.gap += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        bounds = self._bounds
        bounds.phase = Phase.BODY
        self._disarm()
        uploads = bounds.uploads
        if uploads is not None and (self.parser.get_method(), self.url.partition(b"?")[0]) in uploads.routes:
            bounds.request_max_bytes, bounds.request_timeout_s = uploads.max_bytes, uploads.timeout_s
        else:
            bounds.request_max_bytes, bounds.request_timeout_s = bounds.max_body_bytes, bounds.body_timeout_s
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size <= self.max_head_bytes:
            super().on_headers_complete()
        else:
            app, self.app = self.app, head_too_large
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        # Added after uvicorn has built the scope (some versions assign `scope["extensions"]` there, which would drop
        # an entry set earlier) and merged with whatever extensions it declared. The ASGI task is scheduled, not yet
        # run: the app sees the scope as it is left here.
        extension: DisconnectExtension = {"callbacks": [], "disconnected": False, "refused": 0}
        self.scope["extensions"] = {**(self.scope.get("extensions") or {}), DISCONNECT_EXTENSION: extension}  # type: ignore[dict-item]
        if self.cycle is not None and self.cycle.scope is self.scope:  # not for an upgrade, which has no cycle
            self.cycle.transport = self._bounds.cycle_transport  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        bounds = self._bounds
        bounds.body += len(body)
        bounds.gap = 0
        bounds.read_had_body = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        bounds = self._bounds
        bounds.phase = Phase.IDLE
        if bounds.timer is not None:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # A response kept alive (no `connection: close`) sent before its request was whole: uvicorn reads and
        # discards the rest, which stays under the body's bounds (size, trailers, BODY_TIMEOUT_S: past one, the
        # connection is closed), and the connection is reused after it, as the client expects. A refused request
        # is not parsed any more, so it cannot be: it lingers, then closes.
        super().on_response_complete()
        if self._bounds.phase is Phase.REFUSED and not self.transport.is_closing():
            self._linger()
        if self._bounds.phase is Phase.LINGER:
            # Lingering ends the connection: no keep-alive (its timer is uvicorn's, armed just now).
            self._unset_keepalive_if_required()

    def _close_after_response(self) -> None:
        """The cycle closing the connection: after a whole response sent before the request was whole, linger;
        otherwise (a response cut short, an error, or a whole exchange) close at once, as uvicorn does."""
        phase = self._bounds.phase
        if self.cycle.response_complete and (phase is Phase.BODY or phase is Phase.REFUSED):
            self._linger()
        elif phase is not Phase.LINGER:
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """Past a body bound: tell the app (which answers in the route's shape), or cut a started response short."""
        cycle = self.cycle
        if cycle.response_started:
            self.transport.close()
            return
        bounds = self._bounds
        bounds.phase = Phase.REFUSED
        bounds.discarded = 0
        extension = disconnect_extension(cast(Scope, cycle.scope))
        if extension is not None:
            extension["refused"] = status
        cycle.message_event.set()
        # The client may be blocked sending (uvicorn pauses reading while the app does not read): the rest of the
        # request is read and discarded, so that it gets to read the answer.
        self.flow.resume_reading()
        self._arm(self.refusal_grace_s, status)

    def _refusal_unanswered(self, status: int) -> None:
        cycle = self.cycle
        if cycle.response_started:
            self.transport.close()
            return
        # The app's own answer, should it come, goes nowhere: to uvicorn's cycle the client has left.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.write(_REFUSALS[status])
        self._linger()

    def _linger(self) -> None:
        bounds = self._bounds
        bounds.phase = Phase.LINGER
        bounds.discarded = 0
        self._arm(self.lingering_time_s)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            # After what is buffered is written: the client reads the whole answer, then the end of it.
            self.transport.write_eof()

    def _discard(self, size: int) -> None:
        bounds = self._bounds
        bounds.discarded += size
        if bounds.discarded > LINGERING_MAX_BYTES and not self.transport.is_closing():
            self.transport.close()

    def _arm(self, delay_s: float, *args: int) -> None:
        bounds = self._bounds
        if bounds.timer is not None:
            bounds.timer.cancel()
        bounds.timer = self.loop.call_later(delay_s, self._timed_out, *args)

    def _disarm(self) -> None:
        bounds = self._bounds
        if bounds.timer is not None:
            bounds.timer.cancel()
            bounds.timer = None

    def _timed_out(self, *args: int) -> None:
        bounds = self._bounds
        bounds.timer = None
        if self.transport.is_closing():
            return
        phase = bounds.phase
        if phase is Phase.BODY:
            self._refuse(BODY_TIMEOUT)
        elif phase is Phase.REFUSED:
            self._refusal_unanswered(*args)
        elif phase is Phase.HEAD or phase is Phase.LINGER:
            self.transport.close()
