"""Tool use: when the simulated model calls a tool, what it passes, and the round trip with `tool_result`."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from .helpers import MODEL, user

LOOKUP_PROPERTIES: dict[str, Any] = {
    "order_id": {"type": "string"},
    "quantity": {"type": "integer"},
    "price": {"type": "number"},
    "gift": {"type": "boolean"},
    "status": {"type": "string", "enum": ["open", "shipped"]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"}}},
}
LOOKUP: ToolParam = {
    "name": "lookup_order",
    "description": "Find an order",
    "input_schema": {"type": "object", "properties": LOOKUP_PROPERTIES, "required": ["order_id"]},
}
CLOCK: ToolParam = {"name": "clock", "description": "The time", "input_schema": {"type": "object"}}


def tool_use_of(message: anthropic.types.Message) -> ToolUseBlock:
    block = message.content[-1]
    assert isinstance(block, ToolUseBlock)
    return block


class TestWhenAToolIsCalled:
    async def test_naming_a_tool_calls_it_after_some_text(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("Please use lookup_order for #42"), tools=[CLOCK, LOOKUP]
        )

        assert [block.type for block in message.content] == ["text", "tool_use"]
        assert message.stop_reason == "tool_use"
        assert tool_use_of(message).name == "lookup_order"
        assert tool_use_of(message).id.startswith("toolu_01")

    async def test_no_tool_named_means_a_text_answer(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("Just chat"), tools=[CLOCK, LOOKUP]
        )

        assert [block.type for block in message.content] == ["text"]
        assert message.stop_reason == "end_turn"

    async def test_tool_choice_none_never_calls(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("use clock"), tools=[CLOCK], tool_choice={"type": "none"}
        )

        assert message.stop_reason == "end_turn"

    @pytest.mark.parametrize(
        ("tool_choice", "expected"),
        [({"type": "any"}, "clock"), ({"type": "tool", "name": "lookup_order"}, "lookup_order")],
    )
    async def test_forced_tool_choice_calls_without_text(
        self, client: anthropic.AsyncAnthropic, tool_choice: Any, expected: str
    ) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("Hi"), tools=[CLOCK, LOOKUP], tool_choice=tool_choice
        )

        assert [block.type for block in message.content] == ["tool_use"]
        assert tool_use_of(message).name == expected

    async def test_a_call_that_does_not_fit_max_tokens_becomes_text(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=3, messages=user("use lookup_order"), tools=[LOOKUP]
        )

        assert [block.type for block in message.content] == ["text"]
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 3


class TestToolInput:
    async def test_input_follows_the_schema(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("lookup_order"), tools=[LOOKUP]
        )
        arguments = tool_use_of(message).input

        assert set(arguments) == set(LOOKUP_PROPERTIES)
        assert isinstance(arguments["order_id"], str)
        assert isinstance(arguments["quantity"], int)
        assert isinstance(arguments["price"], float)
        assert arguments["gift"] is True
        assert arguments["status"] == "open"
        assert isinstance(arguments["tags"], list)
        assert isinstance(arguments["tags"][0], str)
        address = arguments["address"]
        assert isinstance(address, dict)
        assert set(address) == {"city"}

    async def test_input_is_deterministic(self, client: anthropic.AsyncAnthropic) -> None:
        first = await client.messages.create(model=MODEL, max_tokens=256, messages=user("lookup_order"), tools=[LOOKUP])
        second = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("lookup_order"), tools=[LOOKUP]
        )

        assert tool_use_of(first).input == tool_use_of(second).input
        assert tool_use_of(first).id != tool_use_of(second).id


class TestRoundTrip:
    async def test_tool_result_gets_a_text_answer(self, client: anthropic.AsyncAnthropic) -> None:
        conversation: list[MessageParam] = [{"role": "user", "content": "What time is it? Use clock."}]
        call = await client.messages.create(model=MODEL, max_tokens=256, messages=conversation, tools=[CLOCK])
        tool_use = tool_use_of(call)
        conversation += [
            call.to_param(),
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "12:00"},
                    {"type": "text", "text": "Thanks, clock said that."},
                ],
            },
        ]

        answer = await client.messages.create(model=MODEL, max_tokens=256, messages=conversation, tools=[CLOCK])

        assert answer.stop_reason == "end_turn"
        assert isinstance(answer.content[0], TextBlock)

    async def test_tool_result_with_blocks_and_error_flag(self, client: anthropic.AsyncAnthropic) -> None:
        conversation: list[MessageParam] = [
            {"role": "user", "content": "use clock"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "clock", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "clock is broken"}],
                    }
                ],
            },
        ]

        answer = await client.messages.create(model=MODEL, max_tokens=16, messages=conversation, tools=[CLOCK])

        assert answer.stop_reason == "max_tokens"

    async def test_tool_result_without_its_tool_use_is_rejected(self, client: anthropic.AsyncAnthropic) -> None:
        conversation: list[MessageParam] = [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}
        ]

        with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
            await client.messages.create(model=MODEL, max_tokens=16, messages=conversation, tools=[CLOCK])

    async def test_tool_use_without_its_result_is_rejected(self, client: anthropic.AsyncAnthropic) -> None:
        conversation: list[MessageParam] = [
            {"role": "user", "content": "use clock"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "clock", "input": {}}]},
            {"role": "user", "content": "never mind"},
        ]

        with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
            await client.messages.create(model=MODEL, max_tokens=16, messages=conversation, tools=[CLOCK])
