"""`POST /v1/messages` driven by the official anthropic SDK, pointed at the gateway with a gateway key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest
from anthropic.types import ToolParam

from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_stream import sim_stats
from tests.support.servers import Process

MODEL = "claude-sonnet-4-6"

WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    yield client
    await client.close()


class TestCreate:
    async def test_create_returns_a_message(self, sdk: anthropic.AsyncAnthropic) -> None:
        message = await sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hello"}])
        assert message.type == "message"
        assert message.role == "assistant"
        assert message.content[0].type == "text"
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens > 0
        assert message.usage.output_tokens > 0
        assert message._request_id is not None
        assert message._request_id.startswith("req_")

    async def test_system_prompt_and_multi_turn(self, sdk: anthropic.AsyncAnthropic) -> None:
        message = await sdk.messages.create(
            model=MODEL,
            max_tokens=32,
            system="You are terse.",
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "And again? [[sim:tokens=5]]"},
            ],
        )
        assert message.usage.output_tokens == 5

    async def test_stop_reason_max_tokens(self, sdk: anthropic.AsyncAnthropic) -> None:
        message = await sdk.messages.create(
            model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "go on [[sim:tokens=50]]"}]
        )
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 3

    async def test_tool_use_round_trip(self, sdk: anthropic.AsyncAnthropic) -> None:
        first = await sdk.messages.create(
            model=MODEL,
            max_tokens=256,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        )
        assert first.stop_reason == "tool_use"
        tool_use = next(block for block in first.content if block.type == "tool_use")
        assert tool_use.name == "get_weather"
        second = await sdk.messages.create(
            model=MODEL,
            max_tokens=64,
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny, 21 C"}],
                },
            ],
        )
        assert second.stop_reason == "end_turn"
        assert second.content[0].type == "text"

    async def test_version_and_beta_headers_are_forwarded(
        self, sdk: anthropic.AsyncAnthropic, simulator: Process
    ) -> None:
        await sdk.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-06-01"},
        )
        seen = (await sim_stats(simulator))["last_headers"]
        assert seen["anthropic-version"] == "2023-06-01"  # type: ignore[index]
        assert seen["anthropic-beta"] == "prompt-caching-2024-07-31"  # type: ignore[index]

    async def test_x_api_key_works_as_well_as_bearer(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/v1/messages",
                json={"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
            )
        assert response.status_code == 200
        assert response.json()["type"] == "message"
        assert response.headers["request-id"].startswith("req_")


class TestStream:
    async def test_stream_text_and_final_usage(self, sdk: anthropic.AsyncAnthropic) -> None:
        async with sdk.messages.stream(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "Stream please [[sim:tokens=20]]"}],
        ) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert len(pieces) == 20
        assert "".join(pieces) == final.content[0].text  # type: ignore[union-attr]
        assert final.usage.output_tokens == 20
        assert final.usage.input_tokens > 0
        assert final.stop_reason == "end_turn"

    async def test_stream_tool_use(self, sdk: anthropic.AsyncAnthropic) -> None:
        async with sdk.messages.stream(
            model=MODEL,
            max_tokens=256,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use"
        assert any(block.type == "tool_use" for block in final.content)

    async def test_raw_event_sequence_is_relayed(self, gateway: Gateway) -> None:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as http,
            http.stream(
                "POST",
                "/v1/messages",
                json={
                    "model": MODEL,
                    "max_tokens": 16,
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi [[sim:tokens=3]]"}],
                },
                headers={"authorization": f"Bearer {CLIENT_KEY}", "anthropic-version": "2026-10-21"},
            ) as response,
        ):
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        names = [line[7:].decode() for line in raw.split(b"\n") if line.startswith(b"event: ")]
        assert names == [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert response.headers["request-id"].startswith("req_")

    async def test_midstream_overloaded_reaches_the_sdk(self, sdk: anthropic.AsyncAnthropic) -> None:
        async def consume() -> None:
            async with sdk.messages.stream(
                model=MODEL,
                max_tokens=64,
                messages=[{"role": "user", "content": "[[sim:fault=midstream_overloaded tokens=20]]"}],
            ) as stream:
                async for _ in stream.text_stream:
                    pass

        with pytest.raises(anthropic.APIStatusError) as raised:
            await consume()
        assert raised.value.type == "overloaded_error"


class TestErrors:
    # Upstream refusals are relayed as Anthropic sent them: tests/gateway/test_anthropic_api.py.

    async def test_missing_key_is_401_in_anthropic_shape(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/v1/messages", json={})
        assert response.status_code == 401
        body = response.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"

    async def test_unknown_key_raises_permission_denied(self, gateway: Gateway) -> None:
        client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="not-a-gateway-key", max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError):
            await client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        await client.close()

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"{not json", "not valid JSON"),
            (b"[]", "JSON object"),
            (b'{"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}', "model"),
            (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
            (
                b'{"model": "m", "max_tokens": true, "messages": [{"role": "user", "content": "x"}]}',
                "max_tokens",
            ),
        ],
    )
    async def test_bodies_the_gateway_cannot_read_are_400_invalid_request(
        self, gateway: Gateway, body: bytes, message: str
    ) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/v1/messages",
                content=body,
                headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"},
            )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert message in error["message"]


class TestAnthropicShapeEverywhere:
    @pytest.mark.parametrize(
        ("method", "path", "status"), [("GET", "/v1/messages", 405), ("POST", "/v1/nothing-here", 404)]
    )
    async def test_router_errors_under_v1_take_anthropic_shape(
        self, gateway: Gateway, method: str, path: str, status: int
    ) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            response = await http.request(method, path)
        assert response.status_code == status
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] in {"invalid_request_error", "not_found_error"}
