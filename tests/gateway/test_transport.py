"""`AnthropicTransport`, the routes' raw path to `/v1/messages`, against the simulator and against a real socket
server that misbehaves on purpose: the SDK's retry policy, stale keep-alive connections, headers sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from claude_gateway import __version__
from claude_gateway.errors import UpstreamOverloaded, UpstreamRateLimited, UpstreamRejected, UpstreamUnreachable
from claude_gateway.settings import Settings
from claude_gateway.transport import MAX_RETRY_WAIT_S, AnthropicTransport, should_retry
from tests.conftest import gateway_settings
from tests.support.servers import Process, free_port

BODY = b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[{"role":"user","content":"%s"}]}'
ANSWER = b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":0}}'


def body(text: str) -> bytes:
    return BODY.replace(b"%s", text.encode())


async def sim_requests(simulator: Process) -> int:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        return int((await http.get("/_sim/stats")).json()["requests"])


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[AnthropicTransport]:
    transport = AnthropicTransport(settings)
    try:
        yield transport
    finally:
        await transport.aclose()


class TestAgainstTheSimulator:
    async def test_a_2xx_comes_back_unread_with_our_headers_sent(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url)) as transport:
            response = await transport.post(body("hello [[sim:tokens=3]]"), {"anthropic-beta": "x-test-2025"})
            message = orjson.loads(await response.read())
            response.release()
            assert response.status == 200
            assert message["usage"]["output_tokens"] == 3
        async with httpx.AsyncClient(base_url=simulator.url) as http:
            seen = (await http.get("/_sim/stats")).json()["last_headers"]
        assert seen["anthropic-version"] == "2023-06-01"
        assert seen["anthropic-beta"] == "x-test-2025"
        assert seen["user-agent"] == f"claude-gateway/{__version__}"

    @pytest.mark.parametrize("retries", [0, 2])
    async def test_overloaded_is_retried_within_the_budget(self, simulator: Process, retries: int) -> None:
        async with opened(gateway_settings(simulator.url, upstream_max_retries=retries)) as transport:
            before = await sim_requests(simulator)
            with pytest.raises(UpstreamOverloaded):
                await transport.post(body("[[sim:fault=overloaded]]"), {})
            assert await sim_requests(simulator) - before == 1 + retries

    async def test_a_client_error_is_not_retried(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url, upstream_max_retries=2)) as transport:
            before = await sim_requests(simulator)
            with pytest.raises(UpstreamRejected) as raised:
                await transport.post(body("[[sim:fault=bad_request]]"), {})
            assert raised.value.status_code == 400
            assert await sim_requests(simulator) - before == 1

    async def test_a_long_retry_after_is_passed_on_not_waited_out(self, simulator: Process) -> None:
        """Anthropic asking for 30 s: the caller hears it at once (the SDK would hold the request 30 s a try)."""
        wait = int(MAX_RETRY_WAIT_S) + 22
        async with opened(gateway_settings(simulator.url, upstream_max_retries=2)) as transport:
            before = await sim_requests(simulator)
            async with asyncio.timeout(5):
                with pytest.raises(UpstreamRateLimited) as raised:
                    await transport.post(body(f"[[sim:fault=rate_limit retry_after={wait}]]"), {})
            assert raised.value.headers["Retry-After"] == str(wait)
            assert await sim_requests(simulator) - before == 1

    async def test_nothing_listening_is_unreachable(self) -> None:
        settings = gateway_settings(f"http://127.0.0.1:{free_port()}", upstream_max_retries=1)
        async with opened(settings) as transport:
            with pytest.raises(UpstreamUnreachable):
                await transport.post(body("hi"), {})


class DroppingServer:
    """HTTP/1.1 on a real socket: answers each connection's first request (keep-alive), then closes the connection
    when a second request arrives on it, unanswered: an upstream closing an idle connection as it is reused."""

    def __init__(self) -> None:
        self.requests = 0
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                if answered:
                    self.dropped += 1
                    return
                answered += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class TestStaleConnections:
    async def test_a_reused_connection_closed_by_the_upstream_is_retried_at_once(self) -> None:
        """No backoff and no retry budget spent (retries are 0): the request simply goes again on a new
        connection, and the caller never sees the closed one."""
        dropping = DroppingServer()
        async with dropping as url:
            async with opened(gateway_settings(url, upstream_max_retries=0)) as transport:
                for _ in range(3):
                    async with asyncio.timeout(2):
                        response = await transport.post(body("hi"), {})
                        assert await response.read() == ANSWER
                        response.release()
        assert dropping.dropped == 2
        assert dropping.requests == 3 + dropping.dropped


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (529, {}, True),
        (500, {}, True),
        (429, {}, True),
        (408, {}, True),
        (409, {}, True),
        (400, {}, False),
        (404, {}, False),
        (500, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
    ],
)
def test_should_retry_follows_the_sdk(status: int, headers: dict[str, str], expected: bool) -> None:
    assert should_retry(status, headers) is expected
