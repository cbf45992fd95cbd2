"""Each metric counted where it should be, with bounded labels (the in-thread gateway shares this registry)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from prometheus_client import REGISTRY

from claude_gateway.admission.keys import short_name
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.sse_client import collect, data_events
from tests.support.access_log import access_lines, logged

MODEL = "claude-sonnet-4-6"
CLIENT = short_name(CLIENT_KEY)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def settled_value(name: str, expected: float, **labels: str) -> float:
    """A stream is accounted just after its last byte leaves: wait (briefly) for the count to get there."""
    for _ in range(100):
        if value(name, **labels) == expected:
            break
        await asyncio.sleep(0.02)
    return value(name, **labels)


class TestRequestMetrics:
    async def test_requests_by_route_template_method_and_status(self, gateway: Gateway) -> None:
        labels = {"route": "/analyze/{task_id}", "method": "GET", "status": "404"}
        before = value("claude_gateway_http_requests_total", **labels)
        unmatched = value("claude_gateway_http_requests_total", route="unmatched", method="GET", status="404")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            await http.get("/analyze/no-such-task")
            await http.get("/analyze/another-unknown-task")
            await http.get("/some/random/path/12345")
        # Each request is counted just after its last byte left: wait for the counts to get there.
        assert await settled_value("claude_gateway_http_requests_total", before + 2, **labels) == before + 2
        unmatched_labels = {"route": "unmatched", "method": "GET", "status": "404"}
        assert (
            await settled_value("claude_gateway_http_requests_total", unmatched + 1, **unmatched_labels)
            == unmatched + 1
        )
        assert (
            value("claude_gateway_http_request_duration_seconds_count", route="/analyze/{task_id}", method="GET") >= 2
        )

    async def test_overhead_is_observed_and_sent(self, gateway: Gateway) -> None:
        before = value("claude_gateway_overhead_seconds_count", route="/v1/messages")
        body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            response = await http.post("/v1/messages", json=body)
        assert 0 < float(response.headers["x-gateway-overhead-ms"]) < 10_000
        assert (
            await settled_value("claude_gateway_overhead_seconds_count", before + 1, route="/v1/messages") == before + 1
        )

    async def test_the_access_log_line_carries_the_overhead(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        """`overhead_ms` is the request's time less its 300 ms with Anthropic; a request refused before any call
        has none."""
        body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi [[sim:ttft_ms=300]]"}]}
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                answered = await http.post("/v1/messages", json=body, headers=gateway.headers())
                refused = await http.post("/v1/messages", json=body, headers={"x-api-key": "not-a-key"})
            # By request id, not order: the answered request's line is written after its settlement, which may
            # come after the refusal's.
            (answered_line,) = await access_lines(caplog, request_id=answered.headers["x-request-id"])
            (refused_line,) = await access_lines(caplog, request_id=refused.headers["x-request-id"])
        assert (answered.status_code, refused.status_code) == (200, 403)
        duration_ms, overhead_ms = logged(answered_line, "duration_ms"), logged(answered_line, "overhead_ms")
        assert 0 < overhead_ms <= duration_ms - 300
        assert logged(refused_line, "overhead_ms") is None


class TestUpstreamMetrics:
    async def test_tokens_by_model_direction_and_client(self, gateway: Gateway) -> None:
        cached = [
            {"type": "text", "text": "Shared context for every call. " * 150, "cache_control": {"type": "ephemeral"}}
        ]
        body = {
            "model": MODEL,
            "max_tokens": 16,
            "system": cached,
            "messages": [{"role": "user", "content": "hi [[sim:tokens=6]]"}],
        }
        before = {
            d: value("claude_gateway_tokens_total", model=MODEL, direction=d, client=CLIENT)
            for d in ("input", "output", "cache_read", "cache_write")
        }
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            first = (await http.post("/v1/messages", json=body)).json()["usage"]
            second = (await http.post("/v1/messages", json=body)).json()["usage"]
        after = {d: value("claude_gateway_tokens_total", model=MODEL, direction=d, client=CLIENT) for d in before}
        assert after["output"] - before["output"] == 12
        assert after["input"] - before["input"] == first["input_tokens"] + second["input_tokens"]
        assert after["cache_write"] - before["cache_write"] == first["cache_creation_input_tokens"] > 0
        assert after["cache_read"] - before["cache_read"] == second["cache_read_input_tokens"] > 0

    async def test_stream_outcome_is_its_last_event(self, gateway: Gateway) -> None:
        before_ok = value("claude_gateway_upstream_requests_total", model=MODEL, outcome="ok")
        before_overloaded = value("claude_gateway_upstream_requests_total", model=MODEL, outcome="overloaded")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            async with http.stream(
                "POST", "/chat/stream", json={"message": "[[sim:fault=midstream_overloaded tokens=10]]"}
            ) as failed:
                await collect(failed)
            async with http.stream("POST", "/chat/stream", json={"message": "fine [[sim:tokens=4]]"}) as fine:
                await collect(fine)
        assert failed.status_code == 200
        assert (
            value("claude_gateway_upstream_requests_total", model=MODEL, outcome="overloaded") == before_overloaded + 1
        )
        assert value("claude_gateway_upstream_requests_total", model=MODEL, outcome="ok") == before_ok + 1

    async def test_time_to_first_token_and_active_streams(self, gateway: Gateway) -> None:
        ttft_before = value("claude_gateway_time_to_first_token_seconds_count", model=MODEL)
        active_before = value("claude_gateway_active_streams")
        body = {"message": "[[sim:tokens=30 tokens_per_s=30]]"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            async with http.stream("POST", "/chat/stream", json=body) as response:
                events = data_events(response)
                await anext(events)
                during = value("claude_gateway_active_streams")
                _ = [event async for event in events]
        assert during == active_before + 1
        assert await settled_value("claude_gateway_active_streams", active_before) == active_before
        assert value("claude_gateway_time_to_first_token_seconds_count", model=MODEL) == ttft_before + 1
        assert value("claude_gateway_upstream_duration_seconds_count", model=MODEL, stream="true") > 0

    async def test_unknown_model_names_cannot_grow_the_labels(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            for index in range(5):
                body = {
                    "model": f"Not A Model {index}!",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                await http.post("/v1/messages", json=body)
            text = (await http.get(gateway.metrics_url + "/metrics")).text
        assert "Not A Model" not in text
        assert 'model="other"' in text
