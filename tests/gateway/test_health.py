"""Liveness, readiness and the deep check with its cached upstream call."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import Gateway
from tests.gateway.test_stream import sim_stats
from tests.support.servers import Process, free_port


class TestHealth:
    async def test_live_and_ready(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            live = await http.get("/health/live")
            ready = await http.get("/health/ready")
        assert live.status_code == 200
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"

    async def test_deep_check_is_cached(self, gateway: Gateway, simulator: Process) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            first = await http.get("/health")
            requests_after_first = (await sim_stats(simulator))["requests"]
            second = await http.get("/health")
            requests_after_second = (await sim_stats(simulator))["requests"]
        assert first.status_code == 200
        assert first.json()["status"] == "healthy"
        assert first.json()["claude"] == "connected"
        assert second.json() == first.json()
        assert requests_after_second == requests_after_first

    async def test_deep_check_degraded_when_upstream_unreachable(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{free_port()}")
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            deep = await http.get("/health")
            live = await http.get("/health/live")
        assert deep.status_code == 503
        assert deep.json()["status"] == "degraded"
        assert deep.json()["claude"] == "unreachable"
        assert live.status_code == 200

    async def test_deep_check_reports_bad_credentials(
        self, simulator: Process, make_gateway: Callable[..., Gateway]
    ) -> None:
        # A simulator that accepts only one key: the gateway's key is wrong.
        from tests.support.servers import start_simulator

        strict = start_simulator("--api-key", "sk-only-this-one")
        try:
            gateway = make_gateway(anthropic_base_url=strict.url)
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                deep = await http.get("/health")
        finally:
            strict.stop()
        assert deep.status_code == 503
        assert deep.json()["claude"] == "auth_error"
