"""The production server: Gunicorn with uvicorn workers, metrics summed over workers, a drain that drops nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import httpx

from tests.conftest import CLIENT_KEY
from tests.gateway.sse_client import collect, data_events
from tests.server.conftest import ServeFactory
from tests.support.programs import require_program

HEADERS = {"X-API-Key": CLIENT_KEY}
ROUNDS = 10
ROUND_REQUESTS = 40


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text, or 0."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def access_pids(output: str, path: str) -> set[int]:
    """The worker pids that logged an access line for `path` (JSON log lines)."""
    pids = set()
    for line in output.splitlines():
        if line.startswith("{") and '"logger":"claude_gateway.access"' in line and f'"path":"{path}"' in line:
            pids.add(json.loads(line)["pid"])
    return pids


class TestServe:
    async def test_metrics_sum_over_workers(self, serve: ServeFactory) -> None:
        server = serve(workers=2)
        async with httpx.AsyncClient(
            base_url=server.url, headers=HEADERS, limits=httpx.Limits(max_keepalive_connections=0)
        ) as http:
            before = sample(
                (await http.get("/metrics")).text, "claude_gateway_http_requests_total", route="/chat", status="200"
            )
            # Which worker accepts a connection is the kernel's choice, and an idle worker may take a whole burst:
            # rounds go on (a bounded number of them) until both have served some.
            answers: list[httpx.Response] = []
            for _ in range(ROUNDS):
                answers += await asyncio.gather(
                    *(http.post("/chat", json={"message": "hi [[sim:tokens=3]]"}) for _ in range(ROUND_REQUESTS))
                )
                if len(access_pids(server.output(), "/chat")) == 2:
                    break
            text = (await http.get("/metrics")).text
        assert all(answer.status_code == 200 for answer in answers)
        assert len(access_pids(server.output(), "/chat")) == 2, "both workers served some of the requests"
        after = sample(text, "claude_gateway_http_requests_total", route="/chat", status="200")
        assert after - before == len(answers)
        assert sample(text, "claude_gateway_tokens_total", direction="output") >= 3 * len(answers)
        assert "claude_gateway_active_streams" in text

    async def test_promtool_accepts_the_metrics(self, serve: ServeFactory) -> None:
        promtool = require_program("promtool", "Debian package prometheus")
        server = serve(workers=2)
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as http:
            await http.post("/chat", json={"message": "hi"})
            async with http.stream("POST", "/chat/stream", json={"message": "hi"}) as response:
                await collect(response)
            await http.post("/chat", json={"message": "[[sim:fault=overloaded]]"})
            text = (await http.get("/metrics")).text
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    async def test_no_server_header(self, serve: ServeFactory) -> None:
        server = serve(workers=1)
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/health/live")
        assert "server" not in response.headers
        assert response.status_code == 200

    async def test_sigterm_lets_open_streams_finish(self, serve: ServeFactory) -> None:
        server = serve(workers=2)
        body = {"message": "[[sim:tokens=60 tokens_per_s=40]]"}  # about 1.5 s each

        async def one_stream(http: httpx.AsyncClient, started: asyncio.Event) -> list[object]:
            async with http.stream("POST", "/chat/stream", json=body) as response:
                events = data_events(response)
                first = await anext(events)
                started.set()
                return [first, *[event async for event in events]]

        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30) as http:
            flags = [asyncio.Event() for _ in range(20)]
            streams = [asyncio.create_task(one_stream(http, flag)) for flag in flags]
            await asyncio.gather(*(flag.wait() for flag in flags))
            server.popen.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*streams)
        assert all(result[-1] == "[DONE]" for result in results)
        assert all(result[-2]["usage"]["output"] == 60 for result in results)  # type: ignore[index]
        assert server.popen.wait(timeout=30) == 0
