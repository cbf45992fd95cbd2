"""Canaries for what `claude_gateway.server.http_protocol` takes from uvicorn's internals (its docstring lists it).

uvicorn offers no public hook for a request head's bounds or for telling a stream its client left, so the gateway's
protocol subclasses uvicorn's private httptools protocol. These tests fail loudly when a hook or attribute it uses
disappears or changes shape, or when the disconnect extension stops reaching the app: without them a uvicorn upgrade
could silently fall back to a watcher task per stream (memory) or lose the head bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from claude_gateway.server.http_protocol import GatewayHttpProtocol
from claude_gateway.web.app import create_app
from claude_gateway.web.extensions import DISCONNECT_EXTENSION, disconnect_extension
from tests.conftest import CLIENT_KEY, gateway_settings
from tests.gateway.sse_client import data_events, raw_chunks
from tests.support.servers import Process, ThreadedServer

# Generous: these wait for something that happens within milliseconds on a quiet machine; under load it may take
# seconds, and only its never happening is a failure.
EVENT_DEADLINE_S = 20.0

# The hooks `GatewayHttpProtocol` overrides, with the parameters it calls them with.
OVERRIDDEN_HOOKS = {
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    # Not overridden, called: cancels uvicorn's keep-alive timer when a connection lingers instead.
    "_unset_keepalive_if_required": ["self"],
}


@pytest.mark.parametrize(("name", "parameters"), OVERRIDDEN_HOOKS.items(), ids=OVERRIDDEN_HOOKS.keys())
def test_the_hooks_the_protocol_overrides_keep_their_shape(name: str, parameters: list[str]) -> None:
    hook = getattr(HttpToolsProtocol, name, None)
    assert callable(hook), f"uvicorn's HttpToolsProtocol has no {name}() any more: http_protocol must be rewritten"
    assert list(inspect.signature(hook).parameters) == parameters, f"HttpToolsProtocol.{name} changed its signature"


async def answer_ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class RecordingProtocol(GatewayHttpProtocol):
    """Records, right after uvicorn's `on_headers_complete`, the private attributes `http_protocol` reads."""

    observed: list[dict[str, Any]] = []

    def on_headers_complete(self) -> None:
        before = {
            "url": self.url,
            "headers": list(self.headers),
            "app": self.app,
            "scope": self.scope,
            "method": self.parser.get_method(),
        }
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        self.observed.append(
            {
                **before,
                "cycle_scope_is_scope": cycle is not None and cycle.scope is self.scope,
                "response_complete": getattr(cycle, "response_complete", None),
                "response_started": getattr(cycle, "response_started", None),
                "disconnected": getattr(cycle, "disconnected", None),
                "message_event": getattr(cycle, "message_event", None),
                "cycle_transport": getattr(cycle, "transport", None),
                "loop": getattr(self, "loop", None),
                "transport": getattr(self, "transport", None),
                "flow": getattr(self, "flow", None),
                "app_state": getattr(self, "app_state", None),
            }
        )


@pytest.fixture
def recording_server() -> Iterator[ThreadedServer]:
    RecordingProtocol.observed = []
    server = ThreadedServer(answer_ok, http=RecordingProtocol)
    server.start()
    yield server
    server.stop()


async def test_the_private_attributes_the_protocol_reads_are_there(recording_server: ThreadedServer) -> None:
    async with httpx.AsyncClient(base_url=recording_server.url) as http:
        answer = await http.get("/canary?q=1", headers={"X-Canary": "yes"})
    assert answer.status_code == 200
    [seen] = RecordingProtocol.observed
    assert seen["url"] == b"/canary?q=1", "HttpToolsProtocol.url is no longer the raw request target"
    assert seen["method"] == b"GET", "HttpToolsProtocol.parser.get_method() no longer names the request's method"
    assert (b"x-canary", b"yes") in seen["headers"], "HttpToolsProtocol.headers is no longer [(name, value)]"
    assert callable(seen["app"]), "HttpToolsProtocol.app is no longer the ASGI app"
    assert seen["scope"]["path"] == "/canary", "HttpToolsProtocol.scope is no longer the request's scope"
    assert seen["cycle_scope_is_scope"], "HttpToolsProtocol.cycle no longer holds the request's scope"
    assert seen["response_complete"] is False, "RequestResponseCycle.response_complete is gone"
    assert seen["response_started"] is False, "RequestResponseCycle.response_started is gone"
    assert seen["disconnected"] is False, "RequestResponseCycle.disconnected is gone"
    assert isinstance(seen["message_event"], asyncio.Event), "RequestResponseCycle.message_event is gone"
    assert seen["cycle_transport"] is not None, "RequestResponseCycle.transport is gone"
    assert isinstance(seen["loop"], asyncio.AbstractEventLoop), "HttpToolsProtocol.loop is gone"
    assert isinstance(seen["transport"], asyncio.Transport), "HttpToolsProtocol.transport is gone"
    assert callable(getattr(seen["flow"], "resume_reading", None)), "HttpToolsProtocol.flow.resume_reading is gone"
    assert isinstance(seen["app_state"], dict), "HttpToolsProtocol.app_state (the lifespan state) is gone"


def test_the_cycle_calls_only_what_the_lingering_stand_in_provides() -> None:
    """The cycle's transport is replaced by a stand-in that provides `write`, `close` and `is_closing` (and passes
    anything else on): a new call there means the stand-in must be looked at again."""
    used = set(re.findall(r"self\.transport\.(\w+)", inspect.getsource(RequestResponseCycle)))
    assert used == {"write", "close", "is_closing"}, f"RequestResponseCycle now calls transport.{used}"


class LingerRecorder(GatewayHttpProtocol):
    """Records each close the cycle asks of its transport, the moment a close can linger instead."""

    closes: list[bool] = []

    def _close_after_response(self) -> None:
        self.closes.append(self.cycle.response_complete)
        super()._close_after_response()


async def test_the_cycle_closes_through_its_transport_after_a_connection_close_answer() -> None:
    """An answer with `connection: close` sent before the body is read: uvicorn closes the cycle's transport once
    the response is complete, which is where the lingering close takes over."""
    LingerRecorder.closes = []

    async def refuse_early(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": b"no"})

    server = ThreadedServer(refuse_early, http=LingerRecorder)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=EVENT_DEADLINE_S) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: c\r\nContent-Length: 100000\r\n\r\nsome")
            answer = b""
            while not answer.endswith(b"no"):
                piece = sock.recv(4096)
                assert piece, f"closed before the answer: {answer!r}"
                answer += piece
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert LingerRecorder.closes == [True], "uvicorn no longer closes the cycle's transport after a whole response"


async def test_the_lifespan_state_reaches_the_protocol() -> None:
    """The protocol reads the app's bounds from `settings` in the lifespan state uvicorn hands each connection."""
    marker = object()
    RecordingProtocol.observed = []

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                scope["state"]["settings"] = marker
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await answer_ok(scope, receive, send)

    server = ThreadedServer(with_state, http=RecordingProtocol)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/")).status_code == 200
    finally:
        server.stop()
    [seen] = RecordingProtocol.observed
    assert seen["app_state"].get("settings") is marker, "the lifespan state no longer reaches HttpToolsProtocol"


class ScopeRecorder:
    """An ASGI app around another that keeps the scopes it passes on and the loop it runs on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.scopes: list[Scope] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.scopes.append(scope)
            self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


async def test_every_request_gets_its_own_disconnect_extension() -> None:
    recorder = ScopeRecorder(answer_ok)
    server = ThreadedServer(recorder)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:  # keep-alive: one connection, two requests
            for _ in range(2):
                assert (await http.get("/")).status_code == 200
    finally:
        server.stop()
    extensions = [disconnect_extension(scope) for scope in recorder.scopes]
    assert all(extension is not None for extension in extensions), (
        f"the disconnect extension is missing from the scope (uvicorn replaced scope['extensions']?): "
        f"{[scope.get('extensions') for scope in recorder.scopes]}"
    )
    assert extensions[0] is not extensions[1]
    assert extensions[0] == {"callbacks": [], "disconnected": False, "refused": 0}


async def test_a_raw_stream_is_told_its_client_left() -> None:
    """A stream that never calls `receive()` learns from the extension's callback that its client left."""
    told = threading.Event()

    async def endless_stream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        extension = disconnect_extension(scope)
        assert extension is not None
        left = asyncio.Event()
        extension["callbacks"].append(left.set)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await left.wait()
        told.set()

    server = ThreadedServer(endless_stream)
    server.start()
    try:
        async with (
            httpx.AsyncClient(base_url=server.url) as http,
            http.stream("GET", "/") as response,
            contextlib.aclosing(raw_chunks(response)) as chunks,
        ):
            assert await anext(chunks) == b"first"
        deadline = time.monotonic() + EVENT_DEADLINE_S
        while not told.is_set():
            assert time.monotonic() < deadline, "the stream was never told its client left"
            await asyncio.sleep(0.01)
    finally:
        server.stop()


def _watchers(loop: asyncio.AbstractEventLoop) -> int:
    async def count() -> int:
        return sum("watch_disconnect" in task.get_coro().__qualname__ for task in asyncio.all_tasks())  # type: ignore[union-attr]

    return asyncio.run_coroutine_threadsafe(count(), loop).result(timeout=EVENT_DEADLINE_S)


@pytest.mark.parametrize(
    ("http", "watchers"), [(GatewayHttpProtocol, 0), ("httptools", 1)], ids=["gateway-protocol", "uvicorn-control"]
)
async def test_a_gateway_stream_learns_its_client_left_without_a_watcher_task(
    http: type[GatewayHttpProtocol] | str, watchers: int, simulator: Process
) -> None:
    """The gateway's own `/chat/stream` served by its protocol: the scope carries the extension, no task waits on
    `receive()`, and the upstream stream is closed when the client leaves. Under uvicorn's own protocol (the
    control) the same stream needs a watcher task, which shows the count can tell the two apart."""
    recorder = ScopeRecorder(create_app(gateway_settings(simulator.url)))
    server = ThreadedServer(recorder, http=http)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=simulator.url) as sim:
            before = (await sim.get("/_sim/stats")).json()["streams_cancelled"]
        body = {"message": "[[sim:tokens=2000 tokens_per_s=50]]"}  # 40 s if nobody stopped it
        async with (
            httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": CLIENT_KEY}) as client,
            client.stream("POST", "/chat/stream", json=body) as response,
            contextlib.aclosing(data_events(response)) as events,
        ):
            assert "text" in await anext(events)
            assert recorder.loop is not None
            assert _watchers(recorder.loop) == watchers
            [scope] = [scope for scope in recorder.scopes if scope["path"] == "/chat/stream"]
            assert (DISCONNECT_EXTENSION in scope.get("extensions", {})) is (http is GatewayHttpProtocol)
        deadline = time.monotonic() + EVENT_DEADLINE_S  # far less than the 40 s the stream would run
        async with httpx.AsyncClient(base_url=simulator.url) as sim:
            while (await sim.get("/_sim/stats")).json()["streams_cancelled"] <= before:
                assert time.monotonic() < deadline, "the upstream stream went on after its client left"
                await asyncio.sleep(0.02)
    finally:
        server.stop()
