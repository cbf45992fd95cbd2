"""Liveness, readiness and the deep check with its cached upstream call, made through the routes' own client."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from claude_gateway import __version__
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_stream import sim_stats
from tests.gateway.test_upstream_client import CannedServer
from tests.support.servers import Process, RedisServer, free_port

MESSAGE = orjson.dumps(
    {
        "id": "msg_01Canned",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "pong"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
)


def sdk(gateway: Gateway) -> anthropic.AsyncAnthropic:
    """The official SDK pointed at the gateway, as a client of ours would use it (no retries of its own)."""
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


class TestHealth:
    async def test_live_and_ready(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            live = await http.get("/health/live")
            ready = await http.get("/health/ready")
        assert live.status_code == 200
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"

    async def test_ready_without_redis_says_so(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            ready = await http.get("/health/ready")
        assert (ready.status_code, ready.json()) == (
            200,
            {"status": "ready", "redis": "not_configured", "draining": False},
        )

    async def test_draining_is_not_ready_but_alive(self, make_gateway: Callable[..., Gateway], redis_url: str) -> None:
        """Once the server starts draining, readiness says 503 (load balancers stop sending) while requests are still
        served and liveness stays 200."""
        gateway = make_gateway(redis_url=redis_url)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            before = await http.get("/health/ready")
            gateway.app.state.drain.start()
            draining = await http.get("/health/ready")
            live = await http.get("/health/live")
            served = await http.post("/chat", json={"message": "hi"})
        assert before.status_code == 200
        assert (draining.status_code, draining.json()) == (503, {"status": "draining", "redis": "up", "draining": True})
        assert live.status_code == 200
        assert served.status_code == 200

    @pytest.mark.parametrize(("fail_mode", "status_while_down"), [("open", 200), ("closed", 503)])
    async def test_ready_reports_redis_and_refuses_only_when_it_must(
        self,
        make_gateway: Callable[..., Gateway],
        redis_server: RedisServer,
        redis_url: str,
        fail_mode: str,
        status_while_down: int,
    ) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit_fail_mode=fail_mode, redis_timeout_s=0.2)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            up = await http.get("/health/ready")
            redis_server.stop()
            try:
                down = await http.get("/health/ready")
                live = await http.get("/health/live")
                gauge_while_down = REGISTRY.get_sample_value("claude_gateway_redis_up")
            finally:
                redis_server.start()
            again = await http.get("/health/ready")
        assert (up.status_code, up.json()["redis"]) == (200, "up")
        assert (down.status_code, down.json()["redis"]) == (status_while_down, "down")
        assert down.json()["status"] == ("ready" if status_while_down == 200 else "not_ready")
        assert live.status_code == 200
        assert gauge_while_down == 0
        assert (again.status_code, again.json()["redis"]) == (200, "up")
        assert REGISTRY.get_sample_value("claude_gateway_redis_up") == 1

    async def test_deep_check_is_cached(self, gateway: Gateway, simulator: Process) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            first = await http.get(gateway.metrics_url + "/health")
            requests_after_first = (await sim_stats(simulator))["requests"]
            second = await http.get(gateway.metrics_url + "/health")
            requests_after_second = (await sim_stats(simulator))["requests"]
        assert first.status_code == 200
        assert first.json()["status"] == "healthy"
        assert first.json()["claude"] == "connected"
        assert second.json() == first.json()
        assert requests_after_second == requests_after_first

    async def test_deep_check_degraded_when_upstream_unreachable(self, make_gateway: Callable[..., Gateway]) -> None:
        """Nothing listens where the gateway looks for Anthropic: the deep check says so, as the relay finds."""
        gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{free_port()}", upstream_max_retries=1)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            deep = await http.get(gateway.metrics_url + "/health")
            live = await http.get("/health/live")
        assert deep.status_code == 503
        assert deep.json()["status"] == "degraded"
        assert deep.json()["claude"] == "unreachable"
        assert live.status_code == 200
        async with sdk(gateway) as client:
            with pytest.raises(anthropic.APIStatusError) as raised:
                await client.messages.create(
                    model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
        assert raised.value.status_code == 503
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["error"] == {"type": "api_error", "message": "Could not reach Claude API."}

    async def test_deep_check_and_the_relay_share_one_client(self, make_gateway: Callable[..., Gateway]) -> None:
        """`/v1/messages` and the deep check reach the upstream through the same client object: one keep-alive
        connection of its pool carries both, each with the gateway's own user-agent and key."""
        upstream = CannedServer(answer=MESSAGE)
        async with upstream as url:
            gateway = make_gateway(anthropic_base_url=url)
            async with sdk(gateway) as client:
                message = await client.messages.create(
                    model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                deep = await http.get(gateway.metrics_url + "/health")
        assert message.content[0].type == "text"
        assert deep.status_code == 200
        assert deep.json()["claude"] == "connected"
        relayed, probe = upstream.requests
        assert (relayed.method, relayed.target) == (probe.method, probe.target) == ("POST", "/v1/messages")
        assert orjson.loads(probe.body)["model"] == gateway.settings.health_model
        assert {relayed.headers["user-agent"], probe.headers["user-agent"]} == {f"claude-gateway/{__version__}"}
        assert relayed.headers["x-api-key"] == probe.headers["x-api-key"] == "sk-ant-test-upstream-0d9c4b"
        assert upstream.connections == 1

    async def test_deep_check_reports_bad_credentials(
        self, simulator: Process, make_gateway: Callable[..., Gateway]
    ) -> None:
        # A simulator that accepts only one key: the gateway's key is wrong.
        from tests.support.servers import start_simulator

        strict = start_simulator("--api-key", "sk-only-this-one")
        try:
            gateway = make_gateway(anthropic_base_url=strict.url)
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                deep = await http.get(gateway.metrics_url + "/health")
        finally:
            strict.stop()
        assert deep.status_code == 503
        assert deep.json()["claude"] == "auth_error"
