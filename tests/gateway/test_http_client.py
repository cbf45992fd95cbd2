"""`http_client`, the gateway's HTTP/1.1 client, against real socket servers that answer as each test scripts them:
keep-alive reuse, chunked bodies as they arrive, flow control, timeouts, broken answers, TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import trustme
import uvloop

from claude_gateway.egress import DIRECT
from claude_gateway.http_client import (
    HIGH_WATER_BYTES,
    ConnectFailed,
    ConnectionDropped,
    ConnectTimeout,
    MalformedResponse,
    ReadTimeout,
)
from tests.support.pools import AnyPool, PoolClass, expect_gap, kind_of, lacking
from tests.support.scripted_upstream import answer, chunk, read_request, upstream
from tests.support.servers import free_port


def pool_for(
    pool_class: PoolClass, port: int, *, scheme: str = "http", read_timeout_s: float = 5.0, keepalive_s: float = 30.0
) -> AnyPool:
    return pool_class(
        f"{scheme}://127.0.0.1:{port}/v1/messages",
        connect_timeout_s=0.5,
        read_timeout_s=read_timeout_s,
        keepalive_s=keepalive_s,
        max_idle=8,
        proxies=DIRECT,  # whatever the environment says: these tests are about the client itself
    )


async def post(pool: AnyPool, body: bytes = b"{}", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    response = await pool.request(pool.head("POST", "/v1/messages", headers, len(body)), body)
    try:
        return await response.read()
    finally:
        response.release()


class TestKeepAlive:
    async def test_sequential_requests_share_one_connection(self, pool_class: PoolClass) -> None:
        async with upstream() as server:
            server.handler = server.keep_alive(b'{"ok":true}')
            pool = pool_for(pool_class, server.port)
            assert [await post(pool) for _ in range(3)] == [b'{"ok":true}'] * 3
            await pool.aclose()
        assert server.connections == 1

    async def test_an_answer_not_read_to_its_end_closes_its_connection(self, pool_class: PoolClass) -> None:
        async with upstream() as server:
            big = b"x" * (8 * 1024 * 1024)  # more than arrives with the head
            server.handler = server.keep_alive(big)
            pool = pool_for(pool_class, server.port)
            response = await pool.request(pool.head("POST", "/v1/messages", (), 0), b"")
            response.release()  # unread: the rest of it would be read as the next answer's start
            assert await post(pool) == big
            await pool.aclose()
        assert server.connections == 2

    async def test_a_connection_idle_past_keepalive_is_not_reused(self, pool_class: PoolClass) -> None:
        async with upstream() as server:
            server.handler = server.keep_alive(b"{}")
            pool = pool_for(pool_class, server.port, keepalive_s=0.05)
            await post(pool)
            await asyncio.sleep(0.1)
            await post(pool)
            await pool.aclose()
        assert server.connections == 2

    async def test_an_idle_connection_is_closed_once_past_keepalive(self, pool_class: PoolClass) -> None:
        """Even when no other connection comes back to the pool: the pool's timer closes it."""
        closed = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(answer(b"{}"))
            await writer.drain()
            await reader.read()  # returns when the client closes the connection
            closed.set()

        async with upstream(handle) as server:
            pool = pool_class(
                f"http://127.0.0.1:{server.port}/v1/messages",
                connect_timeout_s=0.5,
                read_timeout_s=0.2,
                keepalive_s=0.1,
                max_idle=8,
                proxies=DIRECT,
            )
            await post(pool)
            async with asyncio.timeout(2):
                await closed.wait()
            await pool.aclose()

    @lacking(aiohttp="its connector keeps every idle connection until keepalive_timeout: no bound on their number")
    async def test_idle_connections_past_max_idle_are_closed(self, pool_class: PoolClass) -> None:
        """Three answers at once, then back to a pool that keeps one idle: the other two connections are closed."""
        arrived = 0
        closed = 0
        all_in = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal arrived, closed
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:  # the client closed the connection
                    closed += 1
                    return
                arrived += 1
                if arrived == 3:
                    all_in.set()
                await all_in.wait()  # three requests in flight together: three connections
                writer.write(answer(b"{}"))
                await writer.drain()

        async with upstream(handle) as server:
            pool = pool_class(
                f"http://127.0.0.1:{server.port}/v1/messages",
                connect_timeout_s=0.5,
                read_timeout_s=5.0,
                keepalive_s=30.0,
                max_idle=1,
                proxies=DIRECT,
            )
            try:
                assert await asyncio.gather(*(post(pool) for _ in range(3))) == [b"{}"] * 3
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 2.0
                while closed < 2 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
            finally:
                await pool.aclose()
        assert server.connections == 3
        assert closed == 2

    async def test_the_request_head_carries_host_length_and_clean_headers(self, pool_class: PoolClass) -> None:
        async with upstream() as server:
            server.handler = server.keep_alive(b"{}")
            pool = pool_for(pool_class, server.port)
            await post(pool, b'{"a":1}', (("anthropic-beta", "x\r\nx-injected: yes"),))
            await pool.aclose()
        head = server.heads[0]
        assert head.startswith(b"POST /v1/messages HTTP/1.1\r\n")
        assert b"host: 127.0.0.1:%d\r\n" % server.port in head
        assert b"content-length: 7\r\n" in head
        assert b"\r\nx-injected" not in head
        assert b"anthropic-beta: xx-injected: yes\r\n" in head


class TestBodies:
    async def test_chunks_arrive_as_the_upstream_sends_them(self, pool_class: PoolClass) -> None:
        """The second chunk is only sent once the client has the first: nothing waits for the whole body."""
        first_seen = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nrequest-id: req_1\r\nx-other: y\r\n\r\n")
            writer.write(chunk(b"event: one\n\n"))
            await writer.drain()
            await first_seen.wait()
            writer.write(chunk(b"event: two\n\n") + b"0\r\n\r\n")
            await writer.drain()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.request(pool.head("POST", "/v1/messages", (), 0), b"")
            assert response.status == 200
            assert response.headers == {"request-id": "req_1"}  # only the headers the gateway reads
            received = []
            async with asyncio.timeout(5):
                async for data in response.chunks():
                    received.append(data)
                    first_seen.set()
            response.release()
            await pool.aclose()
        assert received == [b"event: one\n\n", b"event: two\n\n"]

    async def test_a_reader_behind_stops_the_reading(self, pool_class: PoolClass) -> None:
        """Flow control: an unread answer is not buffered whole; the upstream's writes wait for the reader."""
        size = 64 * 1024 * 1024
        sent = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            for _ in range(size // HIGH_WATER_BYTES):
                writer.write(b"x" * HIGH_WATER_BYTES)
                await writer.drain()
            sent.set()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.request(pool.head("POST", "/v1/messages", (), 0), b"")
            await asyncio.sleep(0.5)
            assert not sent.is_set(), "the whole answer was taken in while nobody read it"
            total = 0
            async for data in response.chunks():
                total += len(data)
            response.release()
            await pool.aclose()
        assert total == size

    async def test_an_upstream_closing_mid_body_is_a_dropped_connection(self, pool_class: PoolClass) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"partial"))
            await writer.drain()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            response = await pool.request(pool.head("POST", "/v1/messages", (), 0), b"")
            with pytest.raises(ConnectionDropped) as dropped:
                await response.read()
            response.release()
            await pool.aclose()
        assert not dropped.value.stale

    async def test_a_body_ended_by_the_close_is_whole(self, pool_class: PoolClass) -> None:
        """No Content-Length, not chunked: the body ends where the upstream closes (an egress proxy may do this)."""
        for head in (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n"):

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes = head) -> None:
                await read_request(reader)
                writer.write(head + b'{"ok":true}')
                await writer.drain()

            async with upstream(handle) as server:
                pool = pool_for(pool_class, server.port)
                assert await post(pool) == b'{"ok":true}', head
                await pool.aclose()

    async def test_an_interim_answer_is_skipped(self, pool_class: PoolClass) -> None:
        """`100 Continue` (and any 1xx) comes before the answer; it is not the answer."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(answer(b'{"final":true}', b"request-id: req_2"))
                await writer.drain()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            for _ in range(2):  # and the kept-alive connection stays in step
                response = await pool.request(pool.head("POST", "/v1/messages", (), 0), b"")
                assert (response.status, response.headers) == (200, {"request-id": "req_2"})
                assert await response.read() == b'{"final":true}'
                response.release()
            await pool.aclose()
        assert server.connections == 1

    @lacking(
        aiohttp="bytes after a whole answer stay on the pooled connection: the next request on it fails as "
        "malformed (a 502 for an innocent caller) instead of the connection being closed"
    )
    async def test_a_connection_closed_by_trailing_garbage_is_not_reused(self, pool_class: PoolClass) -> None:
        """Bytes after a whole answer are not HTTP: the connection is closed, and a closing one is never pooled."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader)
                writer.write(answer(b"{}") + b"garbage\r\n\r\n")
                await writer.drain()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            try:
                assert [await post(pool) for _ in range(3)] == [b"{}"] * 3
            finally:
                await pool.aclose()
        assert server.connections == 3

    async def test_bytes_that_are_not_http_are_malformed(self, pool_class: PoolClass) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            await writer.drain()
            await reader.read()

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port)
            with pytest.raises(MalformedResponse):
                await post(pool)
            await pool.aclose()


class TestTimeouts:
    async def test_an_upstream_silent_between_reads_times_out(self, pool_class: PoolClass) -> None:
        """The timeout is the wait between two reads, not the whole answer: an upstream that keeps sending outlives
        it, then fails it once silent. Each piece goes once the client has the last (the event, not a sleep, paces
        it), a fiftieth of the timeout apart: only a stall of the whole process fifty times that long could fail it."""
        timeout_s = 0.5
        client_has_it = asyncio.Event()
        sent = bytearray()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.5 * timeout_s
            while loop.time() < until:  # for longer than the timeout in all
                client_has_it.clear()
                writer.write(chunk(b"b"))
                sent.extend(b"b")
                await writer.drain()
                await client_has_it.wait()
                await asyncio.sleep(timeout_s / 50)
            await reader.read()  # then silence, until the client gives up and closes

        async with upstream(handle) as server:
            pool = pool_for(pool_class, server.port, read_timeout_s=timeout_s)
            response = await pool.request(pool.head("POST", "/v1/messages", (), 0), b"")
            received = bytearray()

            async def read_all() -> None:
                async for data in response.chunks():
                    received.extend(data)
                    client_has_it.set()

            with pytest.raises(ReadTimeout):
                await read_all()
            response.release()
            await pool.aclose()
        assert received == sent
        assert len(sent) > 1

    async def test_nothing_listening_fails_to_connect(self, pool_class: PoolClass) -> None:
        pool = pool_for(pool_class, free_port())
        with pytest.raises(ConnectFailed):
            await post(pool)
        await pool.aclose()

    async def test_a_connect_that_hangs_times_out(self, pool_class: PoolClass) -> None:
        """A listener whose accept queue is full: Linux drops the SYN and the connect hangs."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            pool = pool_for(pool_class, port)
            with pytest.raises(ConnectTimeout):
                await post(pool)
            await pool.aclose()
        finally:
            for filler in fillers:
                filler.close()
            listener.close()


class TestTLS:
    async def test_https_verifies_the_upstream_certificate(self, pool_class: PoolClass) -> None:
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)

        async with upstream(tls=server_context) as server:
            server.handler = server.keep_alive(b'{"tls":true}')
            untrusting = pool_for(pool_class, server.port, scheme="https")
            with pytest.raises(ConnectFailed):
                await post(untrusting)
            await untrusting.aclose()
            trusting = pool_for(pool_class, server.port, scheme="https")
            assert trusting.ssl is not None
            ca.configure_trust(trusting.ssl)
            assert [await post(trusting) for _ in range(2)] == [b'{"tls":true}'] * 2
            await trusting.aclose()
        # One kept-alive connection: the refused handshake never reached the server's handler.
        assert server.connections == 1


ON_ASYNCIO = [
    (cls, name)
    for cls in (TestKeepAlive, TestBodies, TestTimeouts, TestTLS)
    for name in dir(cls)
    if name.startswith("test_")
]


@pytest.mark.parametrize(("cls", "name"), ON_ASYNCIO, ids=[f"{cls.__name__}.{name}" for cls, name in ON_ASYNCIO])
def test_again_on_uvloop(cls: type, name: str, pool_class: PoolClass, request: pytest.FixtureRequest) -> None:
    """The gateway's workers run uvloop, whose transports are not asyncio's (nor registered as its classes)."""
    expect_gap(request, getattr(cls, name), kind_of(pool_class))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(getattr(cls(), name)(pool_class))
