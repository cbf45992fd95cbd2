"""Per-key request and token limits through the gateway's routes, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anthropic
import httpx
import pytest
from prometheus_client import REGISTRY

from claude_gateway.admission.keys import short_name
from tests.conftest import CLIENT_KEY, OTHER_KEY, Gateway
from tests.gateway.sse_client import collect
from tests.support.servers import RedisServer

MakeGateway = Callable[..., Gateway]


def rejections(client: str, limit: str) -> float:
    return REGISTRY.get_sample_value("claude_gateway_rate_limited_total", {"client": client, "limit": limit}) or 0.0


class TestRequestLimits:
    async def test_burst_admits_exactly_the_limit(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="7/minute")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            answers = await asyncio.gather(*(http.post("/chat", json={"message": "hi"}) for _ in range(20)))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses.count(200) == 7
        assert statuses.count(429) == 13

    async def test_headers_count_down_and_429_says_when(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="3/minute")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            answers = [await http.post("/chat", json={"message": "hi"}) for _ in range(4)]
        assert [a.headers["x-ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
        assert all(a.headers["x-ratelimit-limit"] == "3" for a in answers)
        refused = answers[3]
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert int(refused.headers["x-ratelimit-reset"]) == retry_after
        assert "x-should-retry" not in refused.headers
        assert refused.json()["detail"]

    async def test_long_waits_tell_sdks_not_to_retry(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="1/hour")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            await http.post("/chat", json={"message": "hi"})
            refused = await http.post("/chat", json={"message": "hi"})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 60
        assert refused.headers["x-should-retry"] == "false"

    async def test_limits_are_per_key(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="2/minute")
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            alpha = [
                await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": CLIENT_KEY}) for _ in range(3)
            ]
            beta = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": OTHER_KEY})
        assert [a.status_code for a in alpha] == [200, 200, 429]
        assert beta.status_code == 200

    async def test_every_limited_route_is_limited(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="4/minute")
        message = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            chat = await http.post("/chat", json={"message": "hi"})
            async with http.stream("POST", "/chat/stream", json={"message": "hi"}) as stream:
                await collect(stream)
            messages = await http.post("/v1/messages", json=message)
            analyze = await http.post("/analyze", json={"document": "A short document."})
            refused = await http.post("/v1/messages", json=message)
        assert [chat.status_code, stream.status_code, messages.status_code, analyze.status_code] == [200, 200, 200, 202]
        assert [r.headers["x-ratelimit-remaining"] for r in (chat, stream, messages, analyze)] == ["3", "2", "1", "0"]
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"

    async def test_sdk_sees_a_rate_limit_error(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="1/hour")
        sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=2)
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.RateLimitError):
            # x-should-retry: false makes the SDK give up at once instead of sleeping an hour.
            await asyncio.wait_for(
                sdk.messages.create(
                    model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                ),
                timeout=10,
            )
        await sdk.close()

    async def test_rejections_are_counted_by_client_name(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="1/minute")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            first = await http.post("/chat", json={"message": "hi"})
            assert first.status_code == 200
            names = [
                line
                for line in (await http.get(gateway.metrics_url + "/metrics")).text.splitlines()
                if "rate_limited_total{" in line
            ]
            before = {line.split(" ")[0]: float(line.split(" ")[1]) for line in names}
            await http.post("/chat", json={"message": "hi"})
            text = (await http.get(gateway.metrics_url + "/metrics")).text
        assert CLIENT_KEY not in text
        after = [line for line in text.splitlines() if "rate_limited_total{" in line and 'limit="requests"' in line]
        assert any(float(line.split(" ")[1]) == before.get(line.split(" ")[0], 0) + 1 for line in after)


class TestTokenLimits:
    async def test_parallel_streams_cannot_overrun_the_budget(self, make_gateway: MakeGateway, redis_url: str) -> None:
        # Each stream may spend up to ~1,010 tokens (input estimate + max_tokens): only two fit in 2,500.
        gateway = make_gateway(redis_url=redis_url, token_rate_limit="2500/minute")
        body = {"message": "[[sim:tokens=5 tokens_per_s=20]]", "max_tokens": 1000}
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=30) as http:

            async def one() -> int:
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    await collect(response)
                    return response.status_code

            statuses = await asyncio.gather(*(one() for _ in range(6)))
            # Both finished and settled to what they really used (~5 output tokens each): the budget is free again.
            after = await http.post("/chat", json={"message": "hi", "max_tokens": 1000})
        assert sorted(statuses) == [200, 200, 429, 429, 429, 429]
        assert after.status_code == 200
        assert int(after.headers["x-ratelimit-remaining-tokens"]) > 2500 - 2 * 1010 - 1010

    async def test_token_refusal_names_tokens(self, make_gateway: MakeGateway, redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url, token_rate_limit="100/minute")
        name = short_name(CLIENT_KEY)
        before = rejections(name, "tokens")
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            refused = await http.post("/chat", json={"message": "hi", "max_tokens": 500})
        assert refused.status_code == 429
        assert refused.headers["x-should-retry"] == "false"  # 500 tokens can never fit in 100
        assert rejections(name, "tokens") == before + 1


class TestRedisOutage:
    async def test_fail_open_serves_and_ready_reports(
        self, make_gateway: MakeGateway, redis_server: RedisServer, redis_url: str
    ) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit="100/minute", redis_timeout_s=0.2)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=10) as http:
            assert (await http.get("/health/ready")).status_code == 200
            redis_server.pause()
            try:
                served = await http.post("/chat", json={"message": "hi"})
                ready = await http.get("/health/ready")
            finally:
                redis_server.resume()
            await asyncio.sleep(1.2)
            recovered = await http.post("/chat", json={"message": "hi"})
            ready_again = await http.get("/health/ready")
        assert served.status_code == 200
        # Fail-open: still send traffic here (it is served), and say Redis is down.
        assert ready.status_code == 200
        assert ready.json()["redis"] == "down"
        assert recovered.status_code == 200
        assert ready_again.status_code == 200

    async def test_fail_closed_refuses_with_503(
        self, make_gateway: MakeGateway, redis_server: RedisServer, redis_url: str
    ) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit_fail_mode="closed", redis_timeout_s=0.2)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=10) as http:
            redis_server.stop()
            try:
                refused = await http.post("/chat", json={"message": "hi"})
            finally:
                redis_server.start()
            await asyncio.sleep(1.2)
            recovered = await http.post("/chat", json={"message": "hi"})
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert recovered.status_code == 200
