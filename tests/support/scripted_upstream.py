"""An upstream on a real socket that answers as each test scripts it: plain TCP or TLS, counting its connections and
keeping the request heads it read. For the HTTP client's tests, hostile upstreams included."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# How long a closing connection may take to close when the upstream stops (a peer may hold it open) before it is cut.
CLOSE_WAIT_S = 1.0


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:"))
    return head, await reader.readexactly(length)


def answer(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s" % (
        b"".join(h + b"\r\n" for h in headers),
        len(body),
        body,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream:
    """A TCP (or TLS) server running `handler` on each connection; it counts connections and keeps the heads."""

    def __init__(self, handler: Handler | None) -> None:
        self.handler = handler or self.keep_alive(b"{}")
        self.port = 0
        self.connections = 0
        self.heads: list[bytes] = []
        self._serving: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._closing = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        this = asyncio.current_task()
        assert this is not None
        self._serving.add(this)
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Ended by `close`: the task ends normally, or asyncio's streams log its cancellation as an error.
        finally:
            self._serving.discard(this)
            if not self._closing:
                writer.close()
            elif not writer.transport.is_closing():
                writer.transport.abort()

    async def close(self) -> None:
        """End every handler still running, cutting its connection, and wait for every connection to be closed: a
        test's event loop then closes with no transport left on it (uvloop refuses to close a loop that has one, and
        a TLS close waits for the peer's close_notify)."""
        self._closing = True
        serving = list(self._serving)
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        for writer in self._writers:
            with suppress(OSError):  # it ended in an error: closed all the same
                try:
                    await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT_S)
                except TimeoutError:  # still closing (a peer that neither reads nor answers close_notify): cut it
                    writer.transport.abort()

    def keep_alive(self, body: bytes, *headers: bytes) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head, _ = await read_request(reader)
                self.heads.append(head)
                writer.write(answer(body, *headers))
                await writer.drain()

        return handle


@asynccontextmanager
async def upstream(handler: Handler | None = None, tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    server_state = Upstream(handler)
    server = await asyncio.start_server(server_state.serve, "127.0.0.1", 0, ssl=tls)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        await server_state.close()
        await server.wait_closed()
