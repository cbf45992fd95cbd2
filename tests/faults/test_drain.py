"""SIGTERM under streaming load, beyond tests/server/test_serve.py: long streams all finish within the grace
period while new connections are refused and idle keep-alive connections are closed; past the grace period the
server still exits, in bounded time."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import pytest

from tests.faults.conftest import Tally, chat_stream, client, one
from tests.server.conftest import ServeFactory

# About 4 s each: still streaming well after the signal.
LONG_STREAM = "drain me [[sim:tokens=80 tokens_per_s=20]]"
STREAMS = 40


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
    async def test_streams_finish_while_new_connections_are_refused(self, serve: ServeFactory) -> None:
        server = serve(workers=2, GRACEFUL_TIMEOUT_S="30")
        tally = Tally()
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: g\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"alive"}'):
            first += idle.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        async with client(server.url) as http:
            streams = [asyncio.create_task(one(tally, chat_stream(http, LONG_STREAM))) for _ in range(STREAMS)]
            await asyncio.sleep(1.0)
            signalled = time.monotonic()
            server.popen.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            refused = await asyncio.to_thread(connection_refused, server.port)
            idle.settimeout(5)
            idle_closed = idle.recv(65536) == b""
            idle.close()
            await asyncio.gather(*streams)
        exit_code = await asyncio.to_thread(server.popen.wait, 30)
        print(
            f"drain: {STREAMS} streams, outcomes {dict(tally.outcomes)}, exit after {time.monotonic() - signalled:.1f} s"
        )
        assert tally.outcomes == {"stream:done": STREAMS}, "a stream was dropped during the drain"
        assert refused, "a new connection was served while draining"
        assert idle_closed, "an idle keep-alive connection stayed open while draining"
        assert exit_code == 0

    async def test_past_the_grace_period_the_server_still_exits(self, serve: ServeFactory) -> None:
        grace_s = 2
        server = serve(workers=1, GRACEFUL_TIMEOUT_S=str(grace_s))
        tally = Tally()
        async with client(server.url) as http:
            # 20 s streams: far longer than the grace period.
            streams = [
                asyncio.create_task(one(tally, chat_stream(http, "[[sim:tokens=400 tokens_per_s=20]]")))
                for _ in range(10)
            ]
            await asyncio.sleep(1.0)
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
