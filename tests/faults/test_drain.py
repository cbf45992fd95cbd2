"""SIGTERM under streaming load, beyond tests/server/test_serve.py: long streams all finish within the grace
period while new connections are refused and idle keep-alive connections are closed; past the grace period the
server still exits, in bounded time."""

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

# About 4 s each: still streaming well after the signal.
LONG_STREAM = "drain me [[sim:tokens=80 tokens_per_s=20]]"
STREAMS = 40


async def streams_started(simulator: Process) -> int:
    """Streams the simulator has begun since it started (each one a stream the gateway is relaying or relayed)."""
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        return int((await http.get("/_sim/stats")).json()["streams_started"])


async def _at_least(count: Awaitable[int], expected: int) -> bool:
    return await count >= expected


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: g\r\n\r\n")
            sock.settimeout(2)
            return sock.recv(1) == b""  # accepted by a socket already closing: no answer
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except TimeoutError:
        return False


@pytest.mark.slow
class TestDrain:
    async def test_streams_finish_while_new_connections_are_refused(
        self, serve: ServeFactory, simulator: Process
    ) -> None:
        server = serve(workers=2, GRACEFUL_TIMEOUT_S="30")
        before = await streams_started(simulator)
        tally = Tally()
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: g\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"alive"}'):
            first += idle.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        async with client(server.url) as http:
            streams = [asyncio.create_task(one(tally, chat_stream(http, LONG_STREAM))) for _ in range(STREAMS)]
            assert await async_wait_for(
                lambda: _at_least(streams_started(simulator), before + STREAMS), timeout_s=EVENT_DEADLINE_S
            ), "the streams did not all start"
            signalled = time.monotonic()
            server.popen.send_signal(signal.SIGTERM)
            # The listeners close as the workers take the signal: until then a new connection may still be served.
            refused = await async_wait_for(
                lambda: asyncio.to_thread(connection_refused, server.port), timeout_s=EVENT_DEADLINE_S
            )
            draining = not all(stream.done() for stream in streams)
            idle.settimeout(EVENT_DEADLINE_S)
            idle_closed = idle.recv(65536) == b""
            idle.close()
            await asyncio.gather(*streams)
        exit_code = await asyncio.to_thread(server.popen.wait, 30)
        print(
            f"drain: {STREAMS} streams, outcomes {dict(tally.outcomes)}, exit after {time.monotonic() - signalled:.1f} s"
        )
        assert tally.outcomes == {"stream:done": STREAMS}, "a stream was dropped during the drain"
        assert refused, "new connections were still served while draining"
        assert draining, "the streams had ended before new connections were refused"
        assert idle_closed, "an idle keep-alive connection stayed open while draining"
        assert exit_code == 0

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
