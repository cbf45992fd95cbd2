"""`/v1/messages` takes the fast lane (`fast_lane.GatewayApp`), past FastAPI's router and inner middleware: it
must still get everything the user middleware and the exception handlers give every other route."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client import REGISTRY

from claude_gateway.fast_lane import FastLanes
from tests.conftest import CLIENT_KEY, Gateway

ORIGIN = "https://console.example.com"
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def lanes(gateway: Gateway) -> list[tuple[str, str]]:
    app = gateway.app.middleware_stack
    while app is not None and not isinstance(app, FastLanes):
        app = getattr(app, "app", None)
    assert isinstance(app, FastLanes), "no fast lane in the middleware stack"
    return sorted(app.lanes)


async def test_the_plain_routes_have_lanes(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        await http.get("/health/live")  # the stack is built on the first request
    assert lanes(gateway) == [
        ("POST", "/chat"),
        ("POST", "/chat/stream"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
    ]


async def test_cors_applies_in_the_lane(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(cors_origins=ORIGIN)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        answer = await http.post("/v1/messages", json=MESSAGE, headers={"Origin": ORIGIN, "X-API-Key": CLIENT_KEY})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "request-id" in answer.headers["access-control-expose-headers"].lower()


async def test_errors_metrics_and_ids_are_those_of_every_route(gateway: Gateway) -> None:
    def served(status: str) -> float:
        labels = {"route": "/v1/messages", "method": "POST", "status": status}
        return REGISTRY.get_sample_value("claude_gateway_http_requests_total", labels) or 0.0

    before_ok, before_401 = served("200"), served("401")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        missing_key = await http.post("/v1/messages", json=MESSAGE, headers={"X-Request-ID": "lane-check-1"})
        answered = await http.post("/v1/messages", json=MESSAGE, headers={"X-API-Key": CLIENT_KEY})
        not_json = await http.post("/v1/messages", content=b"{", headers={"X-API-Key": CLIENT_KEY})
    assert missing_key.status_code == 401
    assert missing_key.json()["type"] == "error"  # Anthropic's shape, from the app's exception handler
    assert missing_key.headers["x-request-id"] == "lane-check-1"  # GatewayMiddleware ran
    assert answered.status_code == 200
    assert "x-gateway-overhead-ms" in answered.headers
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    assert served("200") == before_ok + 1
    assert served("401") == before_401 + 1
