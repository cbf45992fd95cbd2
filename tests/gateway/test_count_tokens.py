"""`POST /v1/messages/count_tokens` through a real gateway in front of the simulator, with the official Python SDK:
Anthropic's exact count, its own request limit, no tokens spent, the key's model policy, and its accounting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_stream import sim_stats
from tests.support.servers import Process

MODEL = "claude-sonnet-4-6"
MESSAGES: Any = [{"role": "user", "content": "How many tokens is this, exactly? [[sim:tokens=2]]"}]
SYSTEM = "You count."
MID_CONVERSATION_SYSTEM: Any = [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]


@pytest.fixture
async def direct(simulator: Process) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=simulator.url, api_key="sk-ant-direct", max_retries=0)
    yield client
    await client.close()


def sdk_for(gateway: Gateway, key: str = CLIENT_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0)


def upstream_count(outcome: str) -> float:
    labels = {"model": MODEL, "outcome": outcome}
    return REGISTRY.get_sample_value("claude_gateway_upstream_requests_total", labels) or 0.0


class TestCount:
    async def test_the_count_is_anthropics_the_same_as_straight(
        self, gateway: Gateway, direct: anthropic.AsyncAnthropic
    ) -> None:
        tools: Any = [{"name": "t", "description": "d", "input_schema": {"type": "object"}}]
        async with sdk_for(gateway) as sdk:
            through = await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES, system=SYSTEM, tools=tools)
            created = await sdk.messages.create(
                model=MODEL, max_tokens=8, messages=MESSAGES, system=SYSTEM, tools=tools
            )
        straight = await direct.messages.count_tokens(model=MODEL, messages=MESSAGES, system=SYSTEM, tools=tools)

        assert through.model_dump() == straight.model_dump()
        # Exact: what the message itself then reports as its input.
        assert through.input_tokens == created.usage.input_tokens
        assert through._request_id is not None
        assert through._request_id.startswith("req_")

    async def test_anthropics_refusal_is_relayed(self, gateway: Gateway) -> None:
        async with sdk_for(gateway) as sdk:
            with pytest.raises(anthropic.BadRequestError) as raised:
                await sdk.messages.count_tokens(
                    model=MODEL,
                    messages=MID_CONVERSATION_SYSTEM,
                )
        assert raised.value.body["error"] == {  # type: ignore[index]
            "type": "invalid_request_error",
            "message": "messages.1.role: Input should be 'user' or 'assistant'",
        }

    async def test_it_is_counted_traced_and_logged(self, gateway: Gateway, spans: InMemorySpanExporter) -> None:
        before = upstream_count("ok")
        async with sdk_for(gateway) as sdk:
            counted = await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES)
        assert upstream_count("ok") == before + 1
        deadline = asyncio.get_running_loop().time() + 5
        while not (found := [s for s in spans.get_finished_spans() if s.name == f"count_tokens {MODEL}"]):
            assert asyncio.get_running_loop().time() < deadline, "no count_tokens span"
            await asyncio.sleep(0.01)
        attributes = found[0].attributes or {}
        assert attributes["gen_ai.operation.name"] == "count_tokens"
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["gen_ai.usage.input_tokens"] == counted.input_tokens


class TestLimits:
    async def test_it_has_its_own_request_limit(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(rate_limit="2/minute", count_tokens_rate_limit="3/minute")
        async with sdk_for(gateway) as sdk:
            for _ in range(3):
                await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES)
            with pytest.raises(anthropic.RateLimitError) as raised:
                await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES)
            # Counting took nothing of the message limit: both messages pass, and then the third is refused.
            for _ in range(2):
                await sdk.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
            with pytest.raises(anthropic.RateLimitError):
                await sdk.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
        assert raised.value.response.headers["x-ratelimit-limit"] == "3"
        assert int(raised.value.response.headers["retry-after"]) >= 1

    async def test_messages_over_their_limit_leave_counting_free(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(rate_limit="1/minute")
        async with sdk_for(gateway) as sdk:
            await sdk.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
            with pytest.raises(anthropic.RateLimitError):
                await sdk.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
            counted = await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES)
        assert counted.input_tokens > 0

    async def test_it_spends_no_tokens(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(token_rate_limit="100000/minute")
        async with sdk_for(gateway) as sdk:
            first = await sdk.messages.with_raw_response.create(model=MODEL, max_tokens=8, messages=MESSAGES)
            for _ in range(3):
                counted = await sdk.messages.with_raw_response.count_tokens(model=MODEL, messages=MESSAGES)
                assert "x-ratelimit-remaining-tokens" not in counted.headers
            second = await sdk.messages.with_raw_response.create(model=MODEL, max_tokens=8, messages=MESSAGES)
        spent = int(first.headers["x-ratelimit-remaining-tokens"]) - int(second.headers["x-ratelimit-remaining-tokens"])
        # Between the two messages, only the first message's real usage went (its reservation settled to it).
        usage = (await first.parse()).usage
        assert spent == usage.input_tokens + usage.output_tokens

    def test_the_default_is_generous_and_apart(self, gateway: Gateway) -> None:
        (limit,) = gateway.settings.count_tokens_rate_limit
        assert (limit.amount, limit.GRANULARITY.name) == (600, "minute")
        assert gateway.settings.count_tokens_rate_limit != gateway.settings.rate_limit


class TestPolicy:
    async def test_a_model_the_key_may_not_use_is_refused_before_anthropic(
        self, make_gateway: Callable[..., Gateway], tmp_path: Path, simulator: Process
    ) -> None:
        keys = tmp_path / "keys.yaml"
        keys.write_text(
            'keys:\n  - name: sonnet-only\n    key: cgw-sonnet-only-9a1b\n    models: ["claude-sonnet-*"]\n'
        )
        gateway = make_gateway(api_keys_file=str(keys))
        async with sdk_for(gateway, "cgw-sonnet-only-9a1b") as sdk:
            allowed = await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES)
            before = (await sim_stats(simulator))["requests"]
            with pytest.raises(anthropic.PermissionDeniedError) as raised:
                await sdk.messages.count_tokens(model="claude-opus-4-6", messages=MESSAGES)
        assert allowed.input_tokens > 0
        assert raised.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
        assert (await sim_stats(simulator))["requests"] == before

    async def test_it_needs_a_key(self, gateway: Gateway) -> None:
        async with sdk_for(gateway, "not-a-key") as sdk:
            with pytest.raises(anthropic.PermissionDeniedError):
                await sdk.messages.count_tokens(model=MODEL, messages=MESSAGES)
