"""The production server: Gunicorn with uvicorn workers, metrics summed over workers, a drain that drops nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import httpx

from tests.conftest import CLIENT_KEY
from tests.gateway.sse_client import collect, data_events
from tests.server.conftest import ServeFactory
from tests.support.programs import require_program
from tests.support.servers import Process, free_port, start_command, wait_for_port

HEADERS = {"X-API-Key": CLIENT_KEY}
ROUNDS = 10
ROUND_REQUESTS = 40
# How long a test waits for an access line to be written: milliseconds, but seconds on a loaded machine.
ACCESS_LOG_WAIT_S = 10.0


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
                (await http.get(server.metrics_url + "/metrics")).text,
                "claude_gateway_http_requests_total",
                route="/chat",
                status="200",
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
            text = (await http.get(server.metrics_url + "/metrics")).text
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
            text = (await http.get(server.metrics_url + "/metrics")).text
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


class TestPorts:
    async def test_ops_endpoints_answer_on_the_metrics_port_only(self, serve: ServeFactory) -> None:
        server = serve(workers=2)
        async with httpx.AsyncClient(headers=HEADERS, timeout=30) as http:
            app = {path: await http.get(server.url + path) for path in ("/metrics", "/health", "/health/live")}
            app["/health/ready"] = await http.get(server.url + "/health/ready")
            ops = {path: await http.get(server.metrics_url + path) for path in ("/metrics", "/health", "/health/ready")}
        assert app["/metrics"].status_code == 404
        assert app["/health"].status_code == 404
        assert "claude_gateway" not in app["/metrics"].text
        assert app["/health/live"].status_code == 200
        assert app["/health/ready"].json()["status"] == "ready"
        assert ops["/metrics"].status_code == 200
        assert "claude_gateway_build_info" in ops["/metrics"].text
        assert ops["/health"].json()["claude"] == "connected"
        assert ops["/health/ready"].status_code == 200


class TestForwardedHeaders:
    """X-Forwarded-For / X-Forwarded-Proto count only from FORWARDED_ALLOW_IPS: seen in the access log's address and
    in the scheme of the URL the app builds (the redirect of a path with a trailing slash)."""

    FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}

    async def forwarded_request(self, server: Process) -> tuple[str, set[str]]:
        async with httpx.AsyncClient(base_url=server.url, headers=self.FORWARDED) as http:
            redirect = await http.get("/health/live/")
        assert redirect.status_code == 307
        # The access line is written as the request ends, which may come just after the client has its answer.
        deadline = time.monotonic() + ACCESS_LOG_WAIT_S
        while not (addresses := access_addresses(server.output(), "/health/live/")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return redirect.headers["location"], addresses

    async def test_honoured_from_a_trusted_peer(self, serve: ServeFactory) -> None:
        # FORWARDED_ALLOW_IPS defaults to 127.0.0.1, where the test connects from. Probes' access lines are debug.
        server = serve(workers=1, LOG_LEVEL="debug")
        location, addresses = await self.forwarded_request(server)
        assert location.startswith("https://")
        assert addresses == {"203.0.113.7"}

    async def test_ignored_from_an_untrusted_peer(self, serve: ServeFactory) -> None:
        server = serve(workers=1, FORWARDED_ALLOW_IPS="10.244.0.0/16", LOG_LEVEL="debug")
        location, addresses = await self.forwarded_request(server)
        assert location.startswith("http://127.0.0.1")
        assert addresses == {"127.0.0.1"}


def access_addresses(output: str, path: str) -> set[str]:
    """The `remote_addr` of the access lines for `path` (JSON log lines)."""
    return {
        json.loads(line)["remote_addr"]
        for line in output.splitlines()
        if line.startswith("{") and '"logger":"claude_gateway.access"' in line and f'"path":"{path}"' in line
    }


class TestDev:
    async def test_make_run_serves_the_metrics_port_too(self, simulator: Process) -> None:
        """`claude-gateway dev` (what `make run` runs) binds METRICS_PORT beside its own port, as `serve` does."""
        port, metrics_port = free_port(), free_port()
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-test-upstream-0d9c4b",  # no simulator of its own: the session's
            "ANTHROPIC_BASE_URL": simulator.url,
            "METRICS_PORT": str(metrics_port),
            "PROMETHEUS_MULTIPROC_DIR": "",
        }
        dev = start_command(["dev", "--port", str(port)], port=port, env=env)
        try:
            wait_for_port(metrics_port)
            async with httpx.AsyncClient() as http:
                on_app = await http.get(f"{dev.url}/metrics")
                on_metrics = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            assert dev.stop() == 0
        assert on_app.status_code == 404
        assert on_metrics.status_code == 200
        assert "claude_gateway_build_info" in on_metrics.text
