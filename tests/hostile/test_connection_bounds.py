"""Connections bounded from the first byte to the last: trailers, bodies the app never reads, answers sent early.

What uvicorn lets a client without a key do, and what the gateway's protocol (`http_protocol`) does instead:
- trailers after a chunked body were read without bound (and appended to the request's headers): past
  `MAX_TRAILER_BYTES` the request gets 413, without the server waiting for the end of a line that never ends;
- a body was bounded in time only while the app read it: now `BODY_TIMEOUT_S` runs from the head's end whether or
  not it is read, also after an early answer, however slowly the client goes on;
- an answer sent before the body was read (a 413 from the Content-Length) was followed by a close with unread data,
  which resets the connection and can destroy the answer: now the client, still sending, reads it whole.
Each on asyncio's loop and on uvloop (the production loop), with raw sockets, and with httpx against the real
`claude-gateway serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from claude_gateway.http_protocol import MAX_TRAILER_BYTES, GatewayHttpProtocol
from tests.conftest import CLIENT_KEY, gateway_settings
from tests.hostile.conftest import (
    MakeHardenedGateway,
    closed_by_peer,
    connect,
    read_response,
)
from tests.hostile.test_slow_clients import GIVE_UP_S, trickle, wait_for_load
from tests.support.servers import Process, ThreadedServer

LOOPS = ["asyncio", "uvloop"]
# Short enough that a test is over in a couple of seconds, long enough for a busy machine.
TEST_BODY_TIMEOUT_S = 1.0
TEST_LINGERING_TIME_S = 1.0
# Over the default MAX_BODY_BYTES (10 MiB), the size of the report: a client sending it whole before reading.
ELEVEN_MB = 11_000_000
# More than the largest read of either loop (256 KiB), far less than the lingering read's bound.
TRAILER_FLOOD_BYTES = 1024 * 1024


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def chunked_head(route: str, *, key: str | None = CLIENT_KEY, method: str = "POST") -> bytes:
    lines = [f"{method} {route} HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def assert_closed(sock: socket.socket) -> None:
    assert closed_by_peer(sock, within_s=GIVE_UP_S), "the server kept the connection open"


class TestTrailers:
    async def test_a_trailer_line_past_the_bound_is_refused_before_it_ends(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        # The body deadline is the default 30 s: an answer within the socket's timeout comes from the trailer bound.
        gateway = make_hardened_gateway(head_timeout_s=30, loop=loop)
        with connect(gateway.server.port) as sock:
            sock.sendall(chunked_head("/v1/messages") + chunk(b'{"model": "m"}') + b"0\r\nX-Flood: ")
            # More than one read (the bound holds to within one), and never the line's end.
            sock.sendall(b"t" * TRAILER_FLOOD_BYTES)
            status, headers, body = read_response(sock)
            assert status == 413
            assert headers["connection"] == "close"
            assert json.loads(body)["error"]["type"] == "request_too_large"
            sock.shutdown(socket.SHUT_WR)
            assert_closed(sock)
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    async def test_many_short_trailer_lines_are_refused(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        gateway = make_hardened_gateway(head_timeout_s=30, loop=loop)
        with connect(gateway.server.port) as sock:
            sock.sendall(chunked_head("/chat") + chunk(b'{"message": "hi"}') + b"0\r\n")
            sock.sendall(b"X-T: v\r\n" * (MAX_TRAILER_BYTES // 4))  # twice the bound, and no final empty line
            status, headers, body = read_response(sock)
            assert headers["connection"] == "close"
            assert status == 413
            assert json.loads(body) == {"detail": "Request body too large"}
            sock.shutdown(socket.SHUT_WR)
            assert_closed(sock)
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    async def test_a_flood_of_trailers_is_read_no_further_than_the_lingering_bound(
        self, make_hardened_gateway: MakeHardenedGateway
    ) -> None:
        """64 MiB of trailer lines (the report's attack): answered 413, then the server stops reading and closes,
        so the client cannot send them all."""
        gateway = make_hardened_gateway(head_timeout_s=30, loop="uvloop")
        flood = b"X-T: " + b"v" * 1000 + b"\r\n"
        sent = 0
        with connect(gateway.server.port) as sock:
            sock.sendall(chunked_head("/chat") + chunk(b'{"message": "hi"}') + b"0\r\n")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < 64 * 1024 * 1024:
                    sock.sendall(flood * 64)
                    sent += len(flood) * 64
        assert sent < 64 * 1024 * 1024, "the server read 64 MiB of trailers"
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    async def test_small_trailers_are_accepted_and_never_reach_the_request_headers(self, loop: str) -> None:
        seen: list[list[tuple[bytes, bytes]]] = []

        async def echo_body(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            seen.append(list(scope["headers"]))
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
            )
            await send({"type": "http.response.body", "body": body})

        with served(echo_body, loop) as server, connect(server.port) as sock:
            sock.sendall(
                chunked_head("/", key=None) + chunk(b"hello ") + chunk(b"world") + b"0\r\nX-Checksum: abc\r\n\r\n"
            )
            status, _, body = read_response(sock)
        assert (status, body) == (200, b"hello world")
        [headers] = seen
        assert b"x-checksum" not in {name.lower() for name, _ in headers}


class TestBodyDeadline:
    async def test_a_body_the_app_never_reads_is_cut_at_the_deadline(self, loop: str) -> None:
        """An app that neither reads the body nor answers: at the deadline the protocol answers 408 itself."""

        async def never_reads(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await asyncio.Event().wait()

        with served(never_reads, loop) as server:
            head = b"POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 1000\r\n\r\n"
            answer, seconds = await trickle(server.port, head, b"x" * 1000)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert seconds < GIVE_UP_S, "the connection was kept while the client trickled"
        assert answer.endswith(b'{"detail":"Request body not received in time"}')

    async def test_a_trickled_body_after_an_early_answer_is_cut_off(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        """`/health/live` answers without reading the chunked body the client goes on trickling: the rest of the
        body is read (the connection is kept alive) only until the body's deadline, then the connection is closed,
        instead of reading the trickle for ever."""
        gateway = make_hardened_gateway(head_timeout_s=30, loop=loop, body_timeout_s=TEST_BODY_TIMEOUT_S)
        head = chunked_head("/health/live", method="GET") + chunk(b"x")
        answer, seconds = await trickle(gateway.server.port, head, chunk(b"y") * 200)  # 20 s of trickle
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert seconds < GIVE_UP_S, "the connection was kept while the client trickled"
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    def test_a_connection_answered_early_and_kept_alive_serves_the_next_request(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        """A keep-alive answer sent before the body was whole: the rest of the body is read and discarded, and the
        connection then serves the next request, as the client expects of a response without `connection: close`."""
        gateway = make_hardened_gateway(loop=loop)
        with connect(gateway.server.port) as sock:
            sock.sendall(chunked_head("/health/live", method="GET") + chunk(b"x"))
            status, headers, _ = read_response(sock)
            assert status == 200
            assert headers.get("connection") != "close"
            sock.sendall(chunk(b"the rest") + b"0\r\n\r\n" + b"GET /health/live HTTP/1.1\r\nHost: g\r\n\r\n")
            status, _, body = read_response(sock)
        assert status == 200
        assert json.loads(body)["status"] == "alive"

    async def test_a_trickled_body_the_gateway_reads_gets_408_at_the_deadline(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        gateway = make_hardened_gateway(
            head_timeout_s=30, loop=loop, body_timeout_s=TEST_BODY_TIMEOUT_S, lingering_time_s=TEST_LINGERING_TIME_S
        )
        answer, seconds = await trickle(gateway.server.port, chunked_head("/v1/messages"), chunk(b" ") * 200)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert seconds < GIVE_UP_S, "the connection was kept while the client trickled"
        assert b'"type":"timeout_error"' in answer
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)


class TestEarlyAnswers:
    def test_a_client_still_sending_reads_the_413_sent_from_the_content_length(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        gateway = make_hardened_gateway(loop=loop)
        head = (
            f"POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-API-Key: {CLIENT_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {ELEVEN_MB}\r\n\r\n"
        ).encode()
        with connect(gateway.server.port) as sock:
            sock.sendall(head)
            # All of it, as a client that reads only once it has sent does: the server goes on reading meanwhile.
            sock.sendall(b" " * ELEVEN_MB)
            status, headers, body = read_response(sock)
            assert status == 413
            assert headers["connection"] == "close"
            assert json.loads(body)["error"]["type"] == "request_too_large"
            assert_closed(sock)

    def test_without_the_lingering_close_the_same_client_is_reset(self, simulator: Process) -> None:
        """The control: uvicorn's own protocol closes with the body unread, and the client never gets its 413."""
        server = ThreadedServer(_gateway_app(simulator.url), http="httptools")
        server.start()
        try:
            head = (
                f"POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-API-Key: {CLIENT_KEY}\r\n"
                f"Content-Length: {ELEVEN_MB}\r\n\r\n"
            ).encode()
            with connect(server.port) as sock:
                sock.sendall(head)
                with pytest.raises((BrokenPipeError, ConnectionResetError)):
                    sock.sendall(b" " * ELEVEN_MB)
        finally:
            server.stop()

    async def test_an_unauthenticated_client_reads_its_401(
        self, make_hardened_gateway: MakeHardenedGateway, loop: str
    ) -> None:
        gateway = make_hardened_gateway(loop=loop, lingering_time_s=TEST_LINGERING_TIME_S)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            answer = await http.post("/v1/messages", content=_pieces(b" " * 4_000_000))
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"

    async def test_the_production_server_answers_eleven_megabytes_with_413_under_load(self, serve: Any) -> None:
        """The report's case, with httpx against `claude-gateway serve` (Gunicorn, uvloop): several clients each
        sending 11 MB at once all read their 413 instead of a `ReadError`."""
        server = serve(workers=1)
        body = b" " * ELEVEN_MB
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": CLIENT_KEY}, timeout=60) as http:
            answers = await asyncio.gather(*(http.post("/v1/messages", content=body) for _ in range(4)))
        for answer in answers:
            assert answer.status_code == 413
            assert answer.json()["error"]["type"] == "request_too_large"

    async def test_the_sdk_gets_its_request_too_large_error(self, serve: Any) -> None:
        import anthropic

        server = serve(workers=1)
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key=CLIENT_KEY, max_retries=0)
        async with client:
            with pytest.raises(anthropic.RequestTooLargeError):
                await client.messages.create(
                    model="claude-sonnet-4-6",
                    max_tokens=8,
                    messages=[{"role": "user", "content": "x" * ELEVEN_MB}],
                )


async def _pieces(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    """A body httpx sends chunked, piece by piece."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _gateway_app(simulator_url: str, **overrides: Any) -> Any:
    from claude_gateway.app import create_app

    return create_app(gateway_settings(simulator_url, **overrides))


@contextlib.contextmanager
def served(app: Any, loop: str) -> Iterator[ThreadedServer]:
    """An app served with the gateway's protocol, a 1 s body deadline (from the lifespan state, where the gateway
    keeps its settings) and a short lingering close."""
    settings = gateway_settings("http://127.0.0.1:9", body_timeout_s=TEST_BODY_TIMEOUT_S)

    async def with_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["settings"] = settings
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    protocol = type("TestProtocol", (GatewayHttpProtocol,), {"lingering_time_s": TEST_LINGERING_TIME_S})
    server = ThreadedServer(with_lifespan, http=protocol)
    server.server.config.loop = loop
    server.start()
    try:
        yield server
    finally:
        server.stop()
