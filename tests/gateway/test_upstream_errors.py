"""Upstream failures on `/chat`, mapped as the seed maps them, with clean messages and no upstream text."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import Gateway
from tests.support.servers import free_port


def outcome_count(model: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("claude_gateway_upstream_requests_total", {"model": model, "outcome": outcome})
    return value or 0.0


class TestUpstreamErrors:
    @pytest.mark.parametrize(
        ("fault", "status", "detail", "outcome"),
        [
            ("rate_limit", 429, "Claude rate limit reached. Try again in a moment.", "rate_limited"),
            ("overloaded", 503, "Claude is overloaded. Try again.", "overloaded"),
            ("auth", 500, "Internal configuration error", "error"),
            ("permission", 500, "Internal configuration error", "error"),
            ("server_error", 502, "Claude API error", "error"),
        ],
    )
    async def test_fault_is_mapped(self, gateway: Gateway, fault: str, status: int, detail: str, outcome: str) -> None:
        model = gateway.settings.default_model
        before = outcome_count(model, outcome)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": f"[[sim:fault={fault}]]"}, headers=gateway.headers())
        assert response.status_code == status
        assert response.json() == {"detail": detail}
        assert outcome_count(model, outcome) == before + 1

    async def test_retry_after_is_passed_on(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat",
                json={"message": "[[sim:fault=rate_limit retry_after=17]]"},
                headers=gateway.headers(),
            )
        assert response.status_code == 429
        assert response.headers["retry-after"] == "17"

    async def test_unreachable_upstream_is_503(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{free_port()}")
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "hi"}, headers=gateway.headers())
            stream = await http.post("/chat/stream", json={"message": "hi"}, headers=gateway.headers())
        assert response.status_code == 503
        assert response.json() == {"detail": "Could not reach Claude API."}
        assert stream.status_code == 503

    async def test_hanging_upstream_times_out_with_504(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(upstream_timeout_s=0.5)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            response = await http.post("/chat", json={"message": "[[sim:fault=hang]]"}, headers=gateway.headers())
        assert response.status_code == 504
        assert response.json() == {"detail": "Claude API timed out."}
