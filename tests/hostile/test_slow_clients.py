"""Slow clients: heads and bodies trickled a byte at a time, connections opened and left silent.

uvicorn has no timeout for either (its only timer is the keep-alive one, armed after a response), so the gateway adds
two, both in its HTTP protocol: `REQUEST_HEAD_TIMEOUT_S` (the connection is closed) and the `BODY_TIMEOUT_S` setting
(408 in the route's shape, then closed). Shortened here so that each test takes a couple of seconds. While the slow ones wait,
other clients are served; afterwards the server holds no connection or task for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx

from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.sse_client import collect, data_events
from tests.hostile.conftest import MakeHardenedGateway

TEST_BODY_TIMEOUT_S = 1.0
# The head deadline of the test with 40 slow connections: they must all be open at once before the first is closed.
SLOW_HEAD_TIMEOUT_S = 2.0
SLOW_CLIENTS = 20
TRICKLE_INTERVAL_S = 0.1
# Generous bounds on when the server must have acted: "no hang", not a speed measurement.
GIVE_UP_S = 10.0


async def trickle(port: int, head: bytes, payload: bytes) -> tuple[bytes, float]:
    """Send `head`, then `payload` a byte every interval, then nothing, until the server answers or closes (or
    `GIVE_UP_S` passes); returns (everything the server sent, seconds until it spoke or closed)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pending = [payload[i : i + 1] for i in range(len(payload))]
    answer = b""
    try:
        writer.write(head)
        while time.monotonic() - started < GIVE_UP_S:
            if pending:
                with contextlib.suppress(ConnectionError):
                    writer.write(pending.pop(0))
                    await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(65536), TRICKLE_INTERVAL_S)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            answer += chunk
            if not chunk:
                break
        return answer, time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def server_load(gateway: Gateway) -> tuple[int, int]:
    """(open connections, running request tasks) as uvicorn counts them."""
    state = gateway.server.server.server_state
    return len(state.connections), len(state.tasks)


async def wait_for_load(gateway: Gateway, expected: tuple[int, int]) -> tuple[int, int]:
    deadline = time.monotonic() + GIVE_UP_S
    while server_load(gateway) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return server_load(gateway)


async def wait_until_load(gateway: Gateway, condition: Callable[[tuple[int, int]], bool]) -> bool:
    """Until uvicorn's (connections, tasks) meet `condition`, or `GIVE_UP_S` passes."""
    deadline = time.monotonic() + GIVE_UP_S
    while not condition(server_load(gateway)):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def serve_meanwhile(gateway: Gateway, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
        answers = await asyncio.gather(*(http.post("/chat", json={"message": "meanwhile"}) for _ in range(count)))
    return [answer.status_code for answer in answers]


class TestSlowBodies:
    async def test_trickled_bodies_get_408_and_free_everything(
        self, make_hardened_gateway: MakeHardenedGateway
    ) -> None:
        gateway = make_hardened_gateway(head_timeout_s=30, body_timeout_s=TEST_BODY_TIMEOUT_S)
        body = b'{"message": "' + b"s" * 200 + b'"}'
        head = (
            f"POST /chat HTTP/1.1\r\nHost: g\r\nX-API-Key: {CLIENT_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        slow = [asyncio.create_task(trickle(gateway.server.port, head, body)) for _ in range(SLOW_CLIENTS)]
        assert await wait_until_load(gateway, lambda load: load[1] >= SLOW_CLIENTS), (
            "every slow client holds a request task"
        )
        served = await serve_meanwhile(gateway, 30)
        results = await asyncio.gather(*slow)
        assert served == [200] * 30
        for answer, _ in results:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"connection: close" in answer.lower()
            assert answer.endswith(b'{"detail":"Request body not received in time"}')
        assert max(seconds for _, seconds in results) < GIVE_UP_S
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    async def test_a_stalled_chunked_body_on_v1_messages_gets_408_in_anthropic_shape(
        self, make_hardened_gateway: MakeHardenedGateway
    ) -> None:
        gateway = make_hardened_gateway(head_timeout_s=30, body_timeout_s=TEST_BODY_TIMEOUT_S)
        head = (
            f"POST /v1/messages HTTP/1.1\r\nHost: g\r\nX-API-Key: {CLIENT_KEY}\r\n"
            'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"mod\r\n'
        ).encode()
        answer, _ = await trickle(gateway.server.port, head, b"")
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"type":"timeout_error"' in answer
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    async def test_streams_outlive_the_body_deadline(self, make_hardened_gateway: MakeHardenedGateway) -> None:
        """The deadline covers the body only: a stream waiting for its client to leave is not cut by it."""
        gateway = make_hardened_gateway(head_timeout_s=30, body_timeout_s=TEST_BODY_TIMEOUT_S)
        # About 2 s, twice the body deadline.
        body = {"message": "[[sim:tokens=40 tokens_per_s=20]]"}
        async with (
            httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=30) as http,
            http.stream("POST", "/chat/stream", json=body) as response,
        ):
            events = await collect(response)
        assert events[-1] == "[DONE]"
        assert events[-2]["usage"]["output"] == 40

    async def test_a_client_leaving_after_the_deadline_still_cancels_its_stream(
        self, make_hardened_gateway: MakeHardenedGateway
    ) -> None:
        gateway = make_hardened_gateway(head_timeout_s=30, body_timeout_s=TEST_BODY_TIMEOUT_S)
        body = {"message": "[[sim:tokens=2000 tokens_per_s=50]]"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=30) as http:
            async with (
                http.stream("POST", "/chat/stream", json=body) as response,
                contextlib.aclosing(data_events(response)) as events,
            ):
                await anext(events)
                # Reading on until the body deadline is well past (the stream sends 50 events a second).
                past_the_deadline = time.monotonic() + TEST_BODY_TIMEOUT_S * 1.5
                while time.monotonic() < past_the_deadline:
                    await anext(events)
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)


class TestSlowHeads:
    async def test_trickled_and_silent_connections_are_closed(self, make_hardened_gateway: MakeHardenedGateway) -> None:
        # Long enough that every slow connection is open at once even when the machine is busy.
        gateway = make_hardened_gateway(head_timeout_s=SLOW_HEAD_TIMEOUT_S)
        head = f"POST /chat HTTP/1.1\r\nHost: g\r\nX-API-Key: {CLIENT_KEY}\r\nX-Padding: {'p' * 200}\r\n".encode()
        trickled = [asyncio.create_task(trickle(gateway.server.port, b"", head)) for _ in range(SLOW_CLIENTS)]
        silent = [asyncio.create_task(trickle(gateway.server.port, b"", b"")) for _ in range(SLOW_CLIENTS)]
        assert await wait_until_load(gateway, lambda load: load[0] >= 2 * SLOW_CLIENTS), (
            "every slow client holds a connection"
        )
        served = await serve_meanwhile(gateway, 30)
        results = await asyncio.gather(*trickled, *silent)
        assert served == [200] * 30
        # Closed without an answer (there is no request to answer), well before the trickle would have ended.
        assert all(answer == b"" for answer, _ in results)
        assert max(seconds for _, seconds in results) < GIVE_UP_S
        assert await wait_for_load(gateway, (0, 0)) == (0, 0)

    async def test_a_keep_alive_connection_trickling_its_next_head_is_closed(
        self, make_hardened_gateway: MakeHardenedGateway
    ) -> None:
        gateway = make_hardened_gateway()
        first = b"GET /health/live HTTP/1.1\r\nHost: g\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
        try:
            writer.write(first)
            answer = await asyncio.wait_for(reader.readuntil(b'{"status":"alive"}'), GIVE_UP_S)
            assert answer.startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            closed = False
            for byte in b"GET /health/live HTTP/1.1\r\nHost: g\r\nX-Slow: " + b"s" * 1000:
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    if await asyncio.wait_for(reader.read(1), TRICKLE_INTERVAL_S) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed = True
                    break
            assert closed
            assert time.monotonic() - started < GIVE_UP_S
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
