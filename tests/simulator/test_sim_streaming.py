"""`POST /v1/messages` with `"stream": true`: the raw event stream, and the SDK's stream helpers on top of it."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from .helpers import MODEL, body, names, parse_sse, user

WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}


async def stream_events(http: httpx.AsyncClient, **fields: Any) -> tuple[httpx.Response, list[tuple[str, Any]]]:
    response = await http.post("/v1/messages", json=body(stream=True, **fields))
    assert response.status_code == 200, response.text
    return response, parse_sse(response.content)


class TestRawStream:
    async def test_exact_event_sequence(self, http: httpx.AsyncClient) -> None:
        response, events = await stream_events(http, messages=user("Hello [[sim:tokens=5]]"))

        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["request-id"].startswith("req_01")
        assert names(events) == [
            "message_start",
            "content_block_start",
            "ping",
            *["content_block_delta"] * 5,
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]

    async def test_message_start_has_an_empty_message(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, messages=user("Hello"))
        message = events[0][1]["message"]

        assert message["id"].startswith("msg_01")
        assert message["type"] == "message"
        assert message["role"] == "assistant"
        assert message["model"] == MODEL
        assert message["content"] == []
        assert message["stop_reason"] is None
        assert message["stop_sequence"] is None
        assert message["usage"]["input_tokens"] == 2
        assert message["usage"]["output_tokens"] == 1

    async def test_blocks_and_deltas(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, messages=user("Hello [[sim:tokens=3]]"))

        assert events[1][1] == {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        deltas = [data for name, data in events if name == "content_block_delta"]
        assert all(delta["index"] == 0 and delta["delta"]["type"] == "text_delta" for delta in deltas)
        texts = [delta["delta"]["text"] for delta in deltas]
        assert not texts[0].startswith(" ")
        assert all(text.startswith(" ") for text in texts[1:])
        assert events[-3][1] == {"type": "content_block_stop", "index": 0}

    async def test_message_delta_carries_stop_reason_and_usage(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, max_tokens=4, messages=user("Hello"))

        delta = events[-2][1]
        assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
        assert delta["usage"]["output_tokens"] == 4
        assert delta["usage"]["input_tokens"] == 2

    async def test_empty_answer_has_no_blocks(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, messages=user("[[sim:fault=empty]]"))

        assert names(events) == ["message_start", "ping", "message_delta", "message_stop"]

    async def test_tool_use_after_text(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, messages=user("Weather in Oslo? get_weather please"), tools=[WEATHER])

        starts = [data for name, data in events if name == "content_block_start"]
        assert [start["content_block"]["type"] for start in starts] == ["text", "tool_use"]
        tool = starts[1]
        assert tool["index"] == 1
        assert tool["content_block"]["name"] == "get_weather"
        assert tool["content_block"]["id"].startswith("toolu_01")
        assert tool["content_block"]["input"] == {}
        json_deltas = [data["delta"] for name, data in events if name == "content_block_delta" and data["index"] == 1]
        assert {delta["type"] for delta in json_deltas} == {"input_json_delta"}
        assert json_deltas[0]["partial_json"] == ""
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        sequence = [(name, data.get("index")) for name, data in events if name.startswith("content_block_s")]
        assert sequence == [
            ("content_block_start", 0),
            ("content_block_stop", 0),
            ("content_block_start", 1),
            ("content_block_stop", 1),
        ]
        assert names(events)[-3:] == ["content_block_stop", "message_delta", "message_stop"]

    async def test_forced_tool_use_opens_with_the_tool(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, tools=[WEATHER], tool_choice={"type": "any"})

        assert names(events)[:4] == ["message_start", "content_block_start", "ping", "content_block_delta"]
        assert events[1][1]["content_block"]["type"] == "tool_use"
        assert events[3][1]["delta"] == {"type": "input_json_delta", "partial_json": ""}
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    async def test_stop_sequence_cuts_the_stream(self, http: httpx.AsyncClient) -> None:
        _, full = await stream_events(http, messages=user("Cut me"))
        words = [data["delta"]["text"] for name, data in full if name == "content_block_delta"]
        stop = words[4] + words[5][:2]

        _, events = await stream_events(http, messages=user("Cut me"), stop_sequences=[stop])

        streamed = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
        assert streamed == "".join(words[:4])
        assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}
        assert events[-2][1]["usage"]["output_tokens"] == 6

    async def test_many_tokens_are_all_delivered(self, http: httpx.AsyncClient) -> None:
        _, events = await stream_events(http, max_tokens=1000, messages=user("[[sim:tokens=400 tokens_per_s=4000]]"))

        assert names(events).count("content_block_delta") == 400


class TestSdkStream:
    async def test_text_stream_and_final_message(self, client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=user("Hello")) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()

        assert len(pieces) == 64
        block = final.content[0]
        assert isinstance(block, TextBlock)
        assert block.text == "".join(pieces)
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 64
        assert final.usage.input_tokens == 2

    async def test_streams_what_create_returns(self, client: anthropic.AsyncAnthropic) -> None:
        created = await client.messages.create(model=MODEL, max_tokens=40, messages=user("Same"))
        async with client.messages.stream(model=MODEL, max_tokens=40, messages=user("Same")) as stream:
            streamed = await stream.get_final_message()

        assert [block.to_dict() for block in streamed.content] == [block.to_dict() for block in created.content]
        assert streamed.usage.output_tokens == created.usage.output_tokens

    async def test_raw_events_with_create(self, client: anthropic.AsyncAnthropic) -> None:
        stream = await client.messages.create(model=MODEL, max_tokens=3, messages=user("Hello"), stream=True)
        kinds = [event.type async for event in stream]

        assert kinds[0] == "message_start"
        assert kinds[-1] == "message_stop"

    async def test_tool_use_final_message(self, client: anthropic.AsyncAnthropic) -> None:
        messages: list[MessageParam] = user("get_weather for Rome")
        created = await client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=[WEATHER])
        async with client.messages.stream(model=MODEL, max_tokens=256, messages=messages, tools=[WEATHER]) as stream:
            streamed = await stream.get_final_message()

        tool = streamed.content[-1]
        assert isinstance(tool, ToolUseBlock)
        created_tool = created.content[-1]
        assert isinstance(created_tool, ToolUseBlock)
        assert tool.input == created_tool.input
        assert set(tool.input) == {"city", "unit"}
        assert streamed.stop_reason == "tool_use"

    async def test_concurrent_streams(self, client: anthropic.AsyncAnthropic) -> None:
        async def one(index: int) -> str:
            async with client.messages.stream(model=MODEL, max_tokens=20, messages=user(f"n{index}")) as stream:
                return await stream.get_final_text()

        texts = await asyncio.gather(*(one(index) for index in range(50)))

        assert all(len(text.split()) == 20 for text in texts)
