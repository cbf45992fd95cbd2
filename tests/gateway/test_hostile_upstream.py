"""The HTTP client's bounds against an upstream (or a middlebox) that misbehaves on purpose, on real sockets: a huge
or endless answer head, a head trickled past its deadline, a body or an SSE event too large to hold; and request
bodies streamed up with flow control rather than held whole."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from claude_gateway.egress import DIRECT
from claude_gateway.errors import UpstreamFailed, UpstreamTimeout, classify
from claude_gateway.http_client import (
    MAX_RESPONSE_BODY_BYTES,
    MAX_RESPONSE_HEAD_BYTES,
    ResponseHeadTimeout,
    ResponseHeadTooLarge,
    ResponseTooLarge,
    StreamedBody,
)
from claude_gateway.sse import SSEEventTooLarge, SSEParser
from tests.support.pools import AnyPool, PoolClass, expect_gap, kind_of, lacking
from tests.support.scripted_upstream import answer, chunk, read_request, upstream

MiB = 1024 * 1024
PIECE = 256 * 1024


def pool_for(
    pool_class: PoolClass, port: int, *, read_timeout_s: float = 30.0, head_timeout_s: float | None = None
) -> AnyPool:
    return pool_class(
        f"http://127.0.0.1:{port}/v1/messages",
        connect_timeout_s=2.0,
        read_timeout_s=read_timeout_s,
        head_timeout_s=head_timeout_s,
        keepalive_s=30.0,
        max_idle=8,
        proxies=DIRECT,  # whatever the environment says: these tests are about the client itself
    )


async def write_until_closed(writer: asyncio.StreamWriter, total: int, piece: bytes) -> int:
    """Write `total` bytes of `piece`s; the bytes written when the client closed the connection (or `total`)."""
    written = 0
    try:
        while written < total:
            writer.write(piece)
            await writer.drain()
            written += len(piece)
    except ConnectionError:
        pass
    return written


def rss_bytes() -> int:
    """This process's resident set (Linux's /proc/self/statm: pages)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class TestResponseHead:
    async def test_an_8_mib_header_fails_without_being_taken_whole(self, pool_class: PoolClass) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nx-huge: ")
            await write_until_closed(writer, 8 * MiB, b"a" * PIECE)

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            with pytest.raises(ResponseHeadTooLarge) as raised:
                await pool.send("POST", "/v1/messages", (), b"{}")
            await pool.aclose()
        assert isinstance(classify(raised.value), UpstreamFailed)

    async def test_a_head_past_the_bound_fails_at_the_bound_not_at_its_end(self, pool_class: PoolClass) -> None:
        """The upstream sends a little more than the bound and then waits: the client must not wait with it."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nx-huge: " + b"a" * (MAX_RESPONSE_HEAD_BYTES + 1024))
            await writer.drain()
            await reader.read()  # the head never ends; returns when the client closes

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            async with asyncio.timeout(20):  # a guard: the read timeout is 30 s, so only the bound can end this
                with pytest.raises(ResponseHeadTooLarge):
                    await pool.send("POST", "/v1/messages", (), b"{}")
            await pool.aclose()

    @lacking(
        aiohttp="its parser bounds each header line (max_field_size) and their count (max_headers), not the head in "
        "total: 100 lines of 1 KiB are taken whole (at worst 128 lines of 8 KiB, 1 MiB, with the gateway's settings)"
    )
    async def test_a_head_of_many_short_lines_fails_at_the_bound_in_total(self, pool_class: PoolClass) -> None:
        lines = b"".join(b"x-filler-%d: %s\r\n" % (i, b"a" * 1024) for i in range(100))
        assert len(lines) > MAX_RESPONSE_HEAD_BYTES

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n" + lines + b"content-length: 2\r\n\r\n{}")
            await writer.drain()
            await reader.read()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            try:
                with pytest.raises(ResponseHeadTooLarge):
                    await pool.send("POST", "/v1/messages", (), b"{}")
            finally:
                await pool.aclose()

    async def test_a_head_trickled_a_byte_at_a_time_fails_at_its_deadline(self, pool_class: PoolClass) -> None:
        """Each byte comes well within the read timeout (30 s), so only the head's own deadline can end the wait."""
        trickled: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            trickled.append(0)
            try:
                for byte in b"HTTP/1.1 200 OK\r\n" + b"x-slow: " + b"a" * 10_000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    trickled[0] += 1
                    await asyncio.sleep(0.05)
            except ConnectionError:
                pass
            await reader.read()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port, head_timeout_s=0.5)
            with pytest.raises(ResponseHeadTimeout) as raised:
                await pool.send("POST", "/v1/messages", (), b"{}")
            await pool.aclose()
        assert trickled[0] > 0
        assert isinstance(classify(raised.value), UpstreamTimeout)

    async def test_the_head_deadline_is_the_read_timeout_unless_named(self, pool_class: PoolClass) -> None:
        pool = pool_for(pool_class, 1, read_timeout_s=7.0)
        assert pool.head_timeout_s == 7.0
        await pool.aclose()


class TestResponseBody:
    async def test_a_declared_64_mib_body_is_refused_at_once(self, pool_class: PoolClass) -> None:
        written: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (64 * MiB))
            written.append(await write_until_closed(writer, 64 * MiB, b"x" * PIECE))

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.send("POST", "/v1/messages", (), b"{}")
            with pytest.raises(ResponseTooLarge) as raised:
                await response.read()
            response.release()
            await pool.aclose()
            async with asyncio.timeout(20):
                while not written:  # the upstream's writes fail once the client has closed
                    await asyncio.sleep(0.01)
        assert written[0] < 64 * MiB
        assert isinstance(classify(raised.value), UpstreamFailed)

    async def test_an_undeclared_64_mib_body_is_refused_past_the_bound(self, pool_class: PoolClass) -> None:
        """Chunked, so no length to refuse up front: the read stops past the bound and the connection is closed."""
        written: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            written.append(await write_until_closed(writer, 64 * MiB, chunk(b"x" * PIECE)))

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.send("POST", "/v1/messages", (), b"{}")
            with pytest.raises(ResponseTooLarge):
                await response.read()
            response.release()
            await pool.aclose()
            async with asyncio.timeout(20):
                while not written:
                    await asyncio.sleep(0.01)
        # Loopback socket buffers hold a few MiB at most: far less than the half of it not taken.
        assert MAX_RESPONSE_BODY_BYTES <= written[0] < 64 * MiB

    async def test_a_body_under_the_bound_is_read_whole(self, pool_class: PoolClass) -> None:
        async with upstream() as server:
            server.handler = server.keep_alive(b"y" * (3 * MiB))
            pool = pool_for(pool_class, server.port)
            response = await pool.send("POST", "/v1/messages", (), b"{}")
            assert len(await response.read()) == 3 * MiB
            response.release()
            await pool.aclose()


class TestServerSentEvents:
    async def test_a_16_mib_event_is_refused(self, pool_class: PoolClass) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(chunk(b'event: message_start\ndata: {"type":"message_start"}\n\n'))
            writer.write(chunk(b'event: content_block_delta\ndata: {"text":"'))
            await write_until_closed(writer, 16 * MiB, chunk(b"a" * PIECE))

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.send("POST", "/v1/messages", (), b"{}")
            parser = SSEParser()
            events = []

            async def relay() -> None:
                async for data in response.chunks():
                    events.extend(parser.feed(data))

            with pytest.raises(SSEEventTooLarge) as raised:
                await relay()
            response.release()
            await pool.aclose()
        assert [event.event for event in events] == ["message_start"]
        assert isinstance(classify(raised.value), UpstreamFailed)


class TestStreamedRequestBodies:
    @staticmethod
    async def counting_upstream_handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[int]
    ) -> None:
        """Reads one request's body (by Content-Length, or chunked) counting its bytes, then answers the count."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        total = 0
        if b"transfer-encoding: chunked" in lines:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                while size:
                    data = await reader.read(min(size, PIECE))
                    size -= len(data)
                    total += len(data)
                await reader.readexactly(2)
        else:
            length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
            while total < length:
                data = await reader.read(PIECE)
                if not data:
                    break
                total += len(data)
        received.append(total)
        writer.write(answer(b'{"received":%d}' % total))
        await writer.drain()

    async def test_50_mb_with_a_length_go_up_with_the_process_memory_flat(self, pool_class: PoolClass) -> None:
        await self.send_50_mb(pool_class, chunked=False)

    async def test_50_mb_chunked_go_up_with_the_process_memory_flat(self, pool_class: PoolClass) -> None:
        await self.send_50_mb(pool_class, chunked=True)

    async def send_50_mb(self, pool_class: PoolClass, *, chunked: bool) -> None:
        size = 50 * 1000 * 1000
        piece_size = 1000 * 1000
        received: list[int] = []

        peak = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal peak
            for _ in range(size // piece_size):
                peak = max(peak, rss_bytes())
                # A new piece each time, as a file read gives (written to: a calloc'd piece of zeros never would be).
                yield b"x" * piece_size

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.counting_upstream_handler(reader, writer, received)

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            before = rss_bytes()
            response = await pool.send("POST", "/v1/files", (), StreamedBody(body(), length=None if chunked else size))
            grown = max(peak, rss_bytes()) - before
            assert await response.read() == b'{"received":%d}' % size
            response.release()
            await pool.aclose()
        assert received == [size]
        assert grown < 20 * MiB, f"the process grew {grown / MiB:.0f} MiB sending 50 MB"

    async def test_a_streamed_body_is_sent_once(self, pool_class: PoolClass) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield b"{}"

        streamed = StreamedBody(body(), length=2)
        async with upstream() as server:
            server.handler = server.keep_alive(b"{}")
            pool = pool_for(pool_class, server.port)
            response = await pool.send("POST", "/v1/messages", (), streamed)
            assert streamed.started
            assert await response.read() == b"{}"
            response.release()
            with pytest.raises(RuntimeError):
                await pool.send("POST", "/v1/messages", (), streamed)
            await pool.aclose()

    async def test_an_answer_before_the_body_ends_stops_the_upload(self, pool_class: PoolClass) -> None:
        """A 413 (say) as the first bytes arrive: the rest is not sent, the answer is the caller's, and the
        connection (its request unfinished) is not reused."""
        pieces_taken = 0
        answered = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            nonlocal pieces_taken
            for _ in range(1000):
                pieces_taken += 1
                if pieces_taken == 2:
                    await answered.wait()
                await asyncio.sleep(0)  # as a client's upload would, between its pieces
                yield b"z" * 1024

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(1024)
            writer.write(answer(b'{"error":"too large"}').replace(b"200 OK", b"413 Payload Too Large"))
            await writer.drain()
            answered.set()
            await reader.read()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.send("POST", "/v1/files", (), StreamedBody(body(), length=1000 * 1024))
            assert response.status == 413
            assert await response.read() == b'{"error":"too large"}'
            response.release()
            await pool.aclose()
        assert pieces_taken < 1000


ON_ASYNCIO = [
    (cls, name)
    for cls in (TestResponseHead, TestResponseBody, TestServerSentEvents, TestStreamedRequestBodies)
    for name in dir(cls)
    if name.startswith("test_") and inspect.iscoroutinefunction(getattr(cls, name))
]


@pytest.mark.parametrize(("cls", "name"), ON_ASYNCIO, ids=[f"{cls.__name__}.{name}" for cls, name in ON_ASYNCIO])
def test_again_on_uvloop(cls: type, name: str, pool_class: PoolClass, request: pytest.FixtureRequest) -> None:
    """The gateway's workers run uvloop, whose transports are not asyncio's."""
    expect_gap(request, getattr(cls, name), kind_of(pool_class))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(getattr(cls(), name)(pool_class))
