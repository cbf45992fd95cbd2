"""Writing server-sent events: `EventStreamResponse` is a pure ASGI response that sends each chunk the moment it is
produced and, at the same time, listens for the client going away, so a departed client cancels its generator (and
with it the upstream call) at once rather than at the next write. (Reading Anthropic's is `upstream.sse`.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from claude_gateway.web.extensions import disconnect_extension

DONE = b"data: [DONE]\n\n"

SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Tells nginx (and ingress-nginx) not to buffer this response, whatever its proxy_buffering says.
    (b"x-accel-buffering", b"no"),
)


def data_event(payload: Any) -> bytes:
    """`data: {json}\\n\\n`: one event of the gateway's own `/chat/stream` protocol."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named_event(name: str, payload: Any) -> bytes:
    """`event: name\\ndata: {json}\\n\\n`: an event in Anthropic's own format."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class EventStreamResponse(Response):
    """Streams `chunks` as `text/event-stream`; cancels them as soon as the client disconnects.

    `on_close(disconnected)` runs exactly once when the response ends, however it ends (even if the client left
    before the first chunk was asked for), shielded from cancellation: it is where a stream gives back what it holds.
    A stream that ends normally runs it before its last byte goes out.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        on_close: Callable[[bool], Awaitable[None]] | None = None,
        status_code: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.chunks = chunks
        self.on_close = on_close
        self.status_code = status_code
        self.background = None
        self.raw_headers = list(SSE_HEADERS) + (headers or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        this = asyncio.current_task()
        assert this is not None
        disconnected = finished = False

        def client_left() -> None:
            nonlocal disconnected
            if not finished:
                disconnected = True
                this.cancel()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            client_left()

        # The server tells of a lost connection when it can (`http_protocol`); otherwise one watcher task, not a
        # task group: a stream holds it for its whole life, thousands at once.
        extension = disconnect_extension(scope)
        watcher = None
        if extension is not None:
            extension["callbacks"].append(client_left)
            if extension["disconnected"]:  # gone while the stream was being set up
                client_left()
        else:
            watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # Settled before the answer is complete: a client's next request sees what this one gave back.
            await self._close(disconnected=False)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            # The client went away between two writes (uvicorn raises ClientDisconnected, an OSError).
            disconnected = True
        except asyncio.CancelledError:
            if not disconnected:
                raise
            this.uncancel()  # our own cancellation, done with: the task goes on to clean up
        finally:
            finished = True
            if watcher is not None:
                watcher.cancel()
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self._close(disconnected=disconnected)

    async def _close(self, *, disconnected: bool) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            await on_close(disconnected)
