"""Server-sent events both ways: reading Anthropic's stream and writing ours, with nothing buffered in between.

`SSEParser` splits upstream bytes into events without copying the bytes it relays, in time linear in the bytes,
holding at most `MAX_SSE_EVENT_BYTES` of an unfinished event. `EventStreamResponse` is a pure
ASGI response that sends each chunk the moment it is produced and, at the same time, listens for the client going
away, so a departed client cancels its generator (and with it the upstream call) at once rather than at the next write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from claude_gateway.http_client import HTTPClientError
from claude_gateway.http_protocol import disconnect_extension

DONE = b"data: [DONE]\n\n"

# The most of one event the parser holds before its blank line arrives. Anthropic's events are small (deltas of a few
# dozen bytes) except those that carry a whole block: a server tool's result (a fetched web page or PDF, search
# results) in `content_block_start`, at most a few MiB. Twice the largest we expect, so that a broken or hostile
# upstream cannot make one stream hold more.
MAX_SSE_EVENT_BYTES = 8 * 1024 * 1024

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


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEEventTooLarge(HTTPClientError):
    """An event of the upstream's stream grew past `MAX_SSE_EVENT_BYTES` before it ended."""


class SSEParser:
    """Incremental parser of `event:` / `data:` blocks separated by a blank line (LF or CRLF).

    An unfinished event is kept as the list of its pieces, joined once, when its blank line arrives: each byte is
    searched and copied a bounded number of times however many chunks the event spans."""

    __slots__ = ("_carried_cr", "_pending", "_pending_bytes")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # The last chunk ended in CR: the LF that makes it a CRLF may begin the next.
        self._carried_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events `chunk` completes (a list: called once per relayed chunk, it must cost next to nothing).
        `SSEEventTooLarge` when an unfinished event grows past `MAX_SSE_EVENT_BYTES`."""
        if self._carried_cr:
            chunk = b"\r" + chunk
            self._carried_cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._carried_cr = True
            chunk = chunk.replace(b"\r\n", b"\n")
        pending = self._pending
        if pending:
            if chunk.find(b"\n\n") < 0 and not (chunk[:1] == b"\n" and pending[-1][-1:] == b"\n"):
                pending.append(chunk)
                self._pending_bytes += len(chunk)
                if self._pending_bytes > MAX_SSE_EVENT_BYTES:
                    self._too_large()
                return []
            buffer = pending[0] + chunk if len(pending) == 1 else b"".join([*pending, chunk])
            pending.clear()
            self._pending_bytes = 0
        else:
            buffer = chunk
        events = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = _parse_block(buffer[start:end])
            start = end + 2
            if event is not None:
                events.append(event)
        if start < len(buffer):
            rest = buffer[start:] if start else buffer
            pending.append(rest)
            self._pending_bytes = len(rest)
            if self._pending_bytes > MAX_SSE_EVENT_BYTES:
                self._too_large()
        return events

    @property
    def unfinished(self) -> bool:
        """Bytes of an event whose blank line has not come: a relay cut off here must end that event (`\n\n`)
        before it adds an event of its own, or the client reads the two as one."""
        return bool(self._pending)

    def _too_large(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        raise SSEEventTooLarge(f"an event of the upstream's stream is over {MAX_SSE_EVENT_BYTES} bytes")


def _parse_block(block: bytes) -> SSEEvent | None:
    # Anthropic's every event is `event: name` then one `data: json` line: read that without splitting.
    if block.startswith(b"event: "):
        newline = block.find(b"\n")
        if newline > 0 and block.startswith(b"data: ", newline + 1) and block.find(b"\n", newline + 1) < 0:
            return SSEEvent(block[7:newline].decode("utf-8", "replace"), block[newline + 7 :])
    name = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", "replace")
    if not data:
        return None
    return SSEEvent(name, b"\n".join(data))


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
