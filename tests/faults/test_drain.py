"""SIGTERM under streaming load, beyond tests/server/test_serve.py: the drain. Readiness answers 503 while the
streams in flight finish, everything that still arrives is served (a new connection, or a request on a keep-alive
one), and the server exits once nothing is in flight; past the grace period it still exits, in bounded time."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Awaitable

import httpx
import pytest

from tests.faults.conftest import EVENT_DEADLINE_S, Tally, async_wait_for, chat_stream, client, one
from tests.server.conftest import ServeFactory
from tests.support.servers import Process

# About 3 s each: still streaming well after the signal.
SHORT_STREAM = "drain me [[sim:tokens=60 tokens_per_s=20]]"
# About 12 s: the server has this one in flight for seconds after every short stream has ended, so that readiness
# polled until then is polled during the drain, whatever the machine's load.
TAIL_STREAM = "drain me last [[sim:tokens=240 tokens_per_s=20]]"
STREAMS = 30
# Long enough that a drain cut by its deadline would be plain in the log ("drain deadline reached").
GRACE_S = 120


async def streams_started(simulator: Process) -> int:
    """Streams the simulator has begun since it started (each one a stream the gateway is relaying or relayed)."""
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        return int((await http.get("/_sim/stats")).json()["streams_started"])


async def _at_least(count: Awaitable[int], expected: int) -> bool:
    return await count >= expected


async def readiness(url: str) -> str:
    """`/health/ready` on a new connection: its status and body's status (`503 draining`), or `refused`."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=EVENT_DEADLINE_S) as http:
            response = await http.get("/health/ready")
    except httpx.TransportError as exc:
        return f"refused:{type(exc).__name__}"
    return f"{response.status_code} {response.json()['status']}"


async def _draining(url: str) -> bool:
    return await readiness(url) == "503 draining"


def keepalive_request(sock: socket.socket) -> bytes:
    """One request on an open keep-alive connection: the whole answer (head and a small body)."""
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: g\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"alive"}'):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.mark.slow
class TestDrain:
    async def test_readiness_says_draining_while_streams_finish_and_new_requests_are_served(
        self, serve: ServeFactory, simulator: Process
    ) -> None:
        # One worker: the drain's window (the tail stream in flight) is then known for certain.
        server = serve(workers=1, GRACEFUL_TIMEOUT_S=str(GRACE_S))
        before = await streams_started(simulator)
        tally = Tally()
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.settimeout(EVENT_DEADLINE_S)
        assert keepalive_request(idle).startswith(b"HTTP/1.1 200")
        async with client(server.url, keepalive=False) as http:
            tail = asyncio.create_task(one(tally, chat_stream(http, TAIL_STREAM), deadline_s=60))
            streams = [asyncio.create_task(one(tally, chat_stream(http, SHORT_STREAM))) for _ in range(STREAMS)]
            assert await async_wait_for(
                lambda: _at_least(streams_started(simulator), before + STREAMS + 1), timeout_s=EVENT_DEADLINE_S
            ), "the streams did not all start"
            server.popen.send_signal(signal.SIGTERM)
            assert await async_wait_for(lambda: _draining(server.url), timeout_s=EVENT_DEADLINE_S), (
                "readiness never said draining"
            )
            # The drain: until every short stream is over (the tail one is still in flight), readiness on new
            # connections, new requests, and a request on a keep-alive connection opened before the signal.
            probes: list[str] = []
            served: list[tuple[int, str | None]] = []
            while not all(stream.done() for stream in streams):
                probes.append(await readiness(server.url))
                answer = await http.post("/chat", json={"message": "during the drain [[sim:tokens=3]]"})
                served.append((answer.status_code, answer.headers.get("connection")))
            on_keepalive = keepalive_request(idle)
            tail_running = not tail.done()
            await asyncio.gather(tail, *streams)
        idle.close()
        exit_code = await asyncio.to_thread(server.popen.wait, EVENT_DEADLINE_S)
        print(f"drain: {len(probes)} readiness probes {set(probes)}, {len(served)} requests served during it")
        assert tally.outcomes == {"stream:done": STREAMS + 1}, "a stream was dropped during the drain"
        assert tail_running, "the drain's window closed before the checks ended"
        assert probes, "no readiness probe during the drain"
        assert set(probes) == {"503 draining"}, "readiness was not 503 throughout the drain"
        assert served, "no request during the drain"
        assert all(status == 200 for status, _ in served), "a request during the drain was refused"
        assert all(connection == "close" for _, connection in served), "a draining answer kept its connection"
        assert on_keepalive.startswith(b"HTTP/1.1 200"), "a keep-alive connection was not served during the drain"
        assert b"connection: close" in on_keepalive.lower()
        assert exit_code == 0
        output = server.output()
        assert "drained: nothing in flight" in output, "the server did not exit because its work was done"
        assert "drain deadline reached" not in output

    async def test_past_the_grace_period_the_server_still_exits(self, serve: ServeFactory, simulator: Process) -> None:
        grace_s = 2
        server = serve(workers=1, GRACEFUL_TIMEOUT_S=str(grace_s))
        before = await streams_started(simulator)
        tally = Tally()
        async with client(server.url) as http:
            # 20 s streams: far longer than the grace period.
            streams = [
                asyncio.create_task(one(tally, chat_stream(http, "[[sim:tokens=400 tokens_per_s=20]]")))
                for _ in range(10)
            ]
            assert await async_wait_for(
                lambda: _at_least(streams_started(simulator), before + 10), timeout_s=EVENT_DEADLINE_S
            ), "the streams did not all start"
            signalled = time.monotonic()
            server.popen.send_signal(signal.SIGTERM)
            await asyncio.gather(*streams)
            cut_after = time.monotonic() - signalled
        await asyncio.to_thread(server.popen.wait, 30)
        print(f"grace exceeded: outcomes {dict(tally.outcomes)}, streams ended {cut_after:.1f} s after SIGTERM")
        # Cut at the end of the grace period (not hung), as broken streams: no client waits for ever.
        assert "hung" not in tally.outcomes
        assert "stream:done" not in tally.outcomes
        assert cut_after < grace_s + 10
