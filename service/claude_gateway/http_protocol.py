"""uvicorn's httptools protocol with the two bounds on a request's head that uvicorn lacks.

The one module that touches uvicorn's internals: uvicorn has no public hook for a request head's size or time, nor for
telling an app its client left other than `receive()`. Written for uvicorn 0.54.0 and checked against 0.55.0 (the
latest when written), with httptools 0.9; pyproject.toml pins uvicorn to >=0.54,<0.56 to match. What it relies on,
each guarded by a canary test in tests/canary/test_uvicorn_protocol.py:
- `HttpToolsProtocol`'s methods `connection_made`, `connection_lost`, `data_received` (asyncio's) and the httptools
  parser callbacks `on_message_begin`, `on_headers_complete`, each called with the arguments they take here;
- its attributes `cycle` (the current `RequestResponseCycle`, with `scope` and `response_complete`), `scope`, `url`,
  `headers`, `app` (read once per request in `on_headers_complete`), `transport` and `loop`;
- that `on_headers_complete` only schedules the ASGI task (`loop.create_task`), so the scope can still be changed
  after it returns and before the app first sees it.

The bounds:
- Size: httptools accepts a request line and headers of any size, buffering each header whole before uvicorn sees
  it (a 30 MB header costs 30 MB per connection). Past `MAX_REQUEST_HEAD_BYTES` the answer is 431 and the
  connection is closed: while the head is still arriving (counted by the read, so within one read of the bound),
  and once it is whole (counted exactly, for a head that came in one read).
- Time: uvicorn's only timer is the keep-alive one, armed after a response; a connection that sends its head slowly,
  or never, is kept for ever. Past `REQUEST_HEAD_TIMEOUT_S` without a whole head the connection is closed.

Bodies are bounded by the middleware (`MAX_BODY_BYTES`, `middleware.BODY_READ_TIMEOUT_S`), which sees requests.

It also tells the app when a client leaves mid-answer without the app having to wait on `receive()` for
`http.disconnect`: each request's scope carries `scope["extensions"][DISCONNECT_EXTENSION]` (ASGI extensions are
dicts), whose `callbacks` are run as its connection is lost and whose `disconnected` turns true then, for a stream
that registers only after its client already left (while it waited for a slot or for Anthropic's headers). A stream registers one instead of keeping a task waiting on `receive()` for its
whole life, which cost a task and a chain of middleware frames per open stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypedDict, cast

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# nginx's default large_client_header_buffers is 4 x 8 KiB; 64 KiB leaves room for long JWTs and cookies.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
# From a connection's opening (or a keep-alive request's first byte) to its last header line. Clients and ingress
# controllers send a head in one write; nginx's client_header_timeout is 60 s, but nothing legitimate needs that.
REQUEST_HEAD_TIMEOUT_S = 20.0

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


async def head_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    """The app a whole but oversized head is handed to instead of the gateway (as uvicorn does past
    `limit_concurrency`), so that uvicorn finishes the exchange and closes the connection its own way."""
    await send({"type": "http.response.start", "status": 431, "headers": _TOO_LARGE_HEADERS})
    await send({"type": "http.response.body", "body": _TOO_LARGE_BODY})


class DisconnectExtension(TypedDict):
    callbacks: list[Callable[[], None]]
    disconnected: bool


def disconnect_extension(scope: Scope) -> DisconnectExtension | None:
    """The request's disconnect extension, when the server provides it (this protocol does; others may not)."""
    return (scope.get("extensions") or {}).get(DISCONNECT_EXTENSION)


class _Head:
    """Where the connection's current request head stands. One attribute on the protocol rather than four: uvicorn's
    protocol already has 28, and CPython keeps an object's attributes compact only up to 30 (past that, each
    connection's attribute dict takes 1.5 KiB instead of 300 bytes)."""

    __slots__ = ("began_in_feed", "incomplete", "size", "timer")

    def __init__(self) -> None:
        self.incomplete = True
        self.size = 0
        self.began_in_feed = False
        self.timer: asyncio.TimerHandle | None = None


class GatewayHttpProtocol(HttpToolsProtocol):
    head_timeout_s = REQUEST_HEAD_TIMEOUT_S
    max_head_bytes = MAX_REQUEST_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head = _Head()
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        cycle = self.cycle
        extension = None if cycle is None or cycle.response_complete else disconnect_extension(cast(Scope, cycle.scope))
        super().connection_lost(exc)
        if extension is not None:
            extension["disconnected"] = True
            for callback in extension["callbacks"]:
                callback()

    def data_received(self, data: bytes) -> None:
        head = self._head
        head.began_in_feed = False
        super().data_received(data)
        # A read in which a head began is not counted (it may hold the end of the previous request's body), so the
        # bound holds to within one read; every other read made while a head is incomplete is all head.
        if head.incomplete and not head.began_in_feed and not self.transport.is_closing():
            head.size += len(data)
            if head.size > self.max_head_bytes:
                self._cancel_head_timer()
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        head = self._head
        head.incomplete = True
        head.size = 0
        head.began_in_feed = True
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head.incomplete = False
        self._cancel_head_timer()
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
        extension: DisconnectExtension = {"callbacks": [], "disconnected": False}
        self.scope["extensions"] = {**(self.scope.get("extensions") or {}), DISCONNECT_EXTENSION: extension}  # type: ignore[dict-item]

    def _arm_head_timer(self) -> None:
        head = self._head
        if head.timer is None:
            head.timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        head = self._head
        if head.timer is not None:
            head.timer.cancel()
            head.timer = None

    def _head_timed_out(self) -> None:
        self._head.timer = None
        if self._head.incomplete and not self.transport.is_closing():
            self.transport.close()
