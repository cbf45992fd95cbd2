"""`UpstreamClient`, the process's one path to Anthropic, against the simulator and against real socket servers that
answer as told or misbehave on purpose: the SDK's retry policy, any endpoint through `request()`, stale keep-alive
connections, the headers sent. Every test runs on each upstream HTTP client (`UPSTREAM_HTTP_CLIENT`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import orjson
import pytest

from claude_gateway import __version__
from claude_gateway.aiohttp_pool import AiohttpPool
from claude_gateway.errors import (
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnreachable,
)
from claude_gateway.http_client import ConnectFailed, ConnectionPool, ReadTimeout
from claude_gateway.settings import Settings
from claude_gateway.upstream_client import (
    MAX_RETRY_DELAY_S,
    MAX_RETRY_WAIT_S,
    RetryPolicy,
    UpstreamAnswer,
    UpstreamClient,
    should_retry,
)
from tests.conftest import gateway_settings
from tests.support.servers import Process, free_port

BODY = b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[{"role":"user","content":"%s"}]}'
ANSWER = b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":0}}'


@pytest.fixture(autouse=True, params=["builtin", "aiohttp"])
def http_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The upstream HTTP client every `UpstreamClient` of the test runs on, as the environment names it."""
    kind: str = request.param
    monkeypatch.setenv("UPSTREAM_HTTP_CLIENT", kind)
    return kind


def body(text: str) -> bytes:
    return BODY.replace(b"%s", text.encode())


async def sim_requests(simulator: Process) -> int:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        return int((await http.get("/_sim/stats")).json()["requests"])


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(settings)
    try:
        yield upstream
    finally:
        await upstream.aclose()


class TestAgainstTheSimulator:
    async def test_the_setting_chooses_the_http_client(self, simulator: Process, http_client: str) -> None:
        async with opened(gateway_settings(simulator.url)) as upstream:
            assert upstream.http_client == http_client
            assert isinstance(upstream.pool, {"builtin": ConnectionPool, "aiohttp": AiohttpPool}[http_client])
            response = await upstream.post_message(body("hello [[sim:tokens=2]]"))
            assert orjson.loads(await response.read())["usage"]["output_tokens"] == 2
            response.release()

    async def test_a_2xx_comes_back_unread_with_our_headers_sent(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url)) as upstream:
            response = await upstream.post_message(body("hello [[sim:tokens=3]]"), {"anthropic-beta": "x-test-2025"})
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
        async with opened(gateway_settings(simulator.url, upstream_max_retries=retries)) as upstream:
            before = await sim_requests(simulator)
            with pytest.raises(UpstreamOverloaded):
                await upstream.post_message(body("[[sim:fault=overloaded]]"), {})
            assert await sim_requests(simulator) - before == 1 + retries

    async def test_a_client_error_is_not_retried(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url, upstream_max_retries=2)) as upstream:
            before = await sim_requests(simulator)
            with pytest.raises(UpstreamRejected) as raised:
                await upstream.post_message(body("[[sim:fault=bad_request]]"), {})
            assert raised.value.status_code == 400
            assert await sim_requests(simulator) - before == 1

    async def test_a_long_retry_after_is_passed_on_not_waited_out(self, simulator: Process) -> None:
        """Anthropic asking for 30 s: the caller hears it at once (the SDK would hold the request 30 s a try)."""
        wait = int(MAX_RETRY_WAIT_S) + 22
        async with opened(gateway_settings(simulator.url, upstream_max_retries=2)) as upstream:
            before = await sim_requests(simulator)
            async with asyncio.timeout(5):
                with pytest.raises(UpstreamRateLimited) as raised:
                    await upstream.post_message(body(f"[[sim:fault=rate_limit retry_after={wait}]]"), {})
            assert raised.value.headers["Retry-After"] == str(wait)
            assert await sim_requests(simulator) - before == 1
        answer = raised.value.__cause__  # what a job reads to wait as asked
        assert isinstance(answer, UpstreamAnswer)
        assert answer.status == 429
        assert answer.headers["retry-after"] == str(wait)

    async def test_retries_0_makes_one_call_whatever_the_settings_say(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url, upstream_max_retries=2)) as upstream:
            before = await sim_requests(simulator)
            with pytest.raises(UpstreamOverloaded):
                await upstream.post_message(body("[[sim:fault=overloaded]]"), retries=0)
            assert await sim_requests(simulator) - before == 1

    async def test_nothing_listening_is_unreachable(self) -> None:
        settings = gateway_settings(f"http://127.0.0.1:{free_port()}", upstream_max_retries=1)
        async with opened(settings) as upstream:
            with pytest.raises(UpstreamUnreachable) as raised:
                await upstream.post_message(body("hi"), {})
        assert isinstance(raised.value.__cause__, ConnectFailed)


class TestAnyEndpoint:
    """`request()`: the endpoints the gateway relays next (count_tokens, models, batches, files), the same way."""

    async def test_a_get_with_our_headers_and_the_callers(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url)) as upstream:
            response = await upstream.request("GET", "/v1/models", headers={"anthropic-beta": "files-api-2025-04-14"})
            page = orjson.loads(await response.read())
            response.release()
        assert response.status == 200
        assert any(model["id"] == "claude-sonnet-4-6" for model in page["data"])
        assert response.headers["request-id"].startswith("req_")
        async with httpx.AsyncClient(base_url=simulator.url) as http:
            seen = (await http.get("/_sim/stats")).json()["last_headers"]
        assert seen["anthropic-version"] == "2023-06-01"
        assert seen["anthropic-beta"] == "files-api-2025-04-14"
        assert seen["user-agent"] == f"claude-gateway/{__version__}"

    async def test_a_post_with_a_body(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url)) as upstream:
            response = await upstream.request("POST", "/v1/messages/count_tokens", body=body("count these words"))
            counted = orjson.loads(await response.read())
            response.release()
        assert response.status == 200
        assert counted["input_tokens"] > 0

    async def test_an_error_is_raised_or_returned_as_it_came(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url)) as upstream:
            with pytest.raises(UpstreamRejected) as raised:
                await upstream.request("GET", "/v1/models/claude-nonexistent-1")
            assert raised.value.status_code == 404
            response = await upstream.request("GET", "/v1/models/claude-nonexistent-1", return_errors=True)
            error = orjson.loads(await response.read())
            response.release()
        assert response.status == 404
        assert error["type"] == "error"
        assert error["error"]["type"] == "not_found_error"
        assert response.headers["request-id"].startswith("req_")

    async def test_a_path_is_from_the_apis_root(self, simulator: Process) -> None:
        async with opened(gateway_settings(simulator.url)) as upstream:
            with pytest.raises(ValueError, match="starts with '/'"):
                await upstream.request("GET", "v1/models")

    async def test_the_query_and_the_base_urls_own_path_are_kept(self) -> None:
        server = CannedServer()
        async with server as url, opened(gateway_settings(f"{url}/anthropic/")) as upstream:
            response = await upstream.request("GET", "/v1/messages/batches", query="limit=2&after_id=msgbatch_1")
            await response.read()
            response.release()
            response = await upstream.post_message(body("hi"))
            await response.read()
            response.release()
        assert [seen.target for seen in server.requests] == [
            "/anthropic/v1/messages/batches?limit=2&after_id=msgbatch_1",
            "/anthropic/v1/messages",
        ]
        assert server.connections == 1  # one pool for every endpoint


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


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class CannedServer:
    """HTTP/1.1 on a real socket, with keep-alive: every request gets the same answer. Counts the connections made
    to it and keeps each request's line, headers and body."""

    def __init__(self, status: int = 200, answer: bytes = ANSWER, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.answer = answer
        self.extra_headers = headers or {}
        self.connections = 0
        self.requests: list[Seen] = []
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                content = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Seen(method, target, headers, content))
                extra = "".join(f"{name}: {value}\r\n" for name, value in self.extra_headers.items())
                writer.write(
                    f"HTTP/1.1 {self.status} Canned\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(self.answer)}\r\n{extra}\r\n".encode()
                    + self.answer
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
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()


OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
# Retries in these tests wait milliseconds; the policy's rules are the same.
FAST_RETRIES = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.02)


class TestRetries:
    async def test_each_retry_says_its_number_and_the_last_answer_can_be_returned(self) -> None:
        server = CannedServer(529, OVERLOADED)
        async with server as url:
            upstream = UpstreamClient(gateway_settings(url, upstream_max_retries=2), retry_policy=FAST_RETRIES)
            try:
                with pytest.raises(UpstreamOverloaded):
                    await upstream.request("POST", "/v1/messages/batches", body=b"{}")
                response = await upstream.request("GET", "/v1/models", return_errors=True)
                assert response.status == 529
                assert await response.read() == OVERLOADED
                response.release()
            finally:
                await upstream.aclose()
        assert [seen.headers.get("x-stainless-retry-count") for seen in server.requests] == [None, "1", "2"] * 2
        assert server.connections == 1  # each unsuccessful answer was read whole, so its connection was reused

    async def test_x_should_retry_false_is_obeyed(self) -> None:
        server = CannedServer(529, OVERLOADED, headers={"x-should-retry": "false"})
        async with server as url, opened(gateway_settings(url, upstream_max_retries=2)) as upstream:
            with pytest.raises(UpstreamOverloaded):
                await upstream.post_message(body("hi"))
        assert len(server.requests) == 1

    async def test_a_short_retry_after_ms_is_waited_then_retried(self) -> None:
        server = CannedServer(429, b"{}", headers={"retry-after-ms": "20"})
        async with server as url, opened(gateway_settings(url, upstream_max_retries=1)) as upstream:
            with pytest.raises(UpstreamRateLimited) as raised:
                await upstream.post_message(body("hi"))
        assert len(server.requests) == 2
        assert raised.value.headers["Retry-After"] == "1"  # whole seconds for the caller, at least one


class TestStaleConnections:
    async def test_a_reused_connection_closed_by_the_upstream_is_retried_at_once(self) -> None:
        """No backoff and no retry budget spent (retries are 0): the request simply goes again on a new
        connection, and the caller never sees the closed one."""
        dropping = DroppingServer()
        async with dropping as url:
            async with opened(gateway_settings(url, upstream_max_retries=0)) as upstream:
                for _ in range(3):
                    async with asyncio.timeout(2):
                        response = await upstream.post_message(body("hi"), {})
                        assert await response.read() == ANSWER
                        response.release()
        assert dropping.dropped == 2
        assert dropping.requests == 3 + dropping.dropped


class TestRetryPolicy:
    """The one retry policy: the client retries in place by it, and a job waits by it before running again."""

    @pytest.mark.parametrize(("retry", "ceiling"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (40, 8.0)])
    def test_the_backoff_doubles_up_to_a_cap_less_a_quarter_of_jitter(self, retry: int, ceiling: float) -> None:
        assert MAX_RETRY_DELAY_S == 8.0
        for _ in range(50):
            assert 0.75 * ceiling <= RetryPolicy().backoff_s(retry) <= ceiling

    @pytest.mark.parametrize(
        ("headers", "wait"),
        [
            ({"retry-after": "3"}, 3.0),
            ({"retry-after": "0.25"}, 0.25),
            ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the precise one wins
            ({"retry-after": "120"}, 120.0),  # as asked: the caller decides whether it can wait that long
        ],
    )
    def test_anthropics_retry_after_comes_first(self, headers: dict[str, str], wait: float) -> None:
        assert RetryPolicy().delay_s(UpstreamAnswer(429, headers), retry=3) == wait

    @pytest.mark.parametrize(
        "failure",
        [
            UpstreamAnswer(529, {}),
            UpstreamAnswer(429, {"retry-after": "0"}),
            UpstreamAnswer(429, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}),
            ConnectFailed("refused"),
            ReadTimeout("stalled"),
            TimeoutError(),
        ],
    )
    def test_otherwise_the_backoff(self, failure: BaseException) -> None:
        assert 0.75 * 2.0 <= (RetryPolicy().delay_s(failure, retry=2) or 0.0) <= 2.0

    @pytest.mark.parametrize(
        "failure",
        [
            UpstreamAnswer(400, {}),
            UpstreamAnswer(401, {}),
            UpstreamAnswer(529, {"x-should-retry": "false"}),
            None,  # an error with nothing behind it, such as an answer that is not JSON
            ValueError("not a failure of the connection"),
        ],
    )
    def test_never_what_must_not_be_retried(self, failure: BaseException | None) -> None:
        assert RetryPolicy().delay_s(failure, retry=0) is None


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
