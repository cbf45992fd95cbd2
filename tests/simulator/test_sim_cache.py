"""Prompt caching: a prefix is written once, then read; `input_tokens` leaves the cached part out."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Literal

import anthropic
import orjson
import pytest
from anthropic.types import TextBlockParam, ToolParam

from .helpers import MODEL, MakeSimulator, raw_http, sdk, user

SYSTEM_TEXT = "You are a patient assistant who answers in full sentences. " * 8
PROMPT = "Hello there"


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def cached_system(text: str = SYSTEM_TEXT, ttl: Literal["5m", "1h"] = "5m") -> list[TextBlockParam]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


@pytest.fixture
async def client(make_simulator: MakeSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """A simulator of its own: its cache starts empty."""
    async with sdk(make_simulator().base_url) as fresh:
        yield fresh


async def usage(client: anthropic.AsyncAnthropic, **request: Any) -> anthropic.types.Usage:
    request.setdefault("messages", user(PROMPT))
    message: anthropic.types.Message = await client.messages.create(model=MODEL, max_tokens=8, **request)
    return message.usage


class TestSystemPrompt:
    async def test_first_writes_then_reads(self, client: anthropic.AsyncAnthropic) -> None:
        prefix, total = tokens(len(SYSTEM_TEXT)), tokens(len(SYSTEM_TEXT) + len(PROMPT))

        first = await usage(client, system=cached_system())
        second = await usage(client, system=cached_system())

        assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (prefix, 0)
        assert first.input_tokens == total - prefix
        assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, prefix)
        assert second.input_tokens == total - prefix

    async def test_a_new_question_reads_the_same_prefix(self, client: anthropic.AsyncAnthropic) -> None:
        await usage(client, system=cached_system())

        other = await usage(client, system=cached_system(), messages=user("Something else entirely"))

        assert other.cache_read_input_tokens == tokens(len(SYSTEM_TEXT))
        assert other.input_tokens == tokens(len(SYSTEM_TEXT) + len("Something else entirely")) - tokens(
            len(SYSTEM_TEXT)
        )

    async def test_another_prefix_is_another_entry(self, client: anthropic.AsyncAnthropic) -> None:
        await usage(client, system=cached_system())

        other = await usage(client, system=cached_system(SYSTEM_TEXT + "Be brief."))

        assert other.cache_read_input_tokens == 0
        assert other.cache_creation_input_tokens == tokens(len(SYSTEM_TEXT + "Be brief."))

    async def test_another_model_has_its_own_cache(self, client: anthropic.AsyncAnthropic) -> None:
        await usage(client, system=cached_system())

        other = await client.messages.create(
            model="claude-haiku-4-5-20251001", max_tokens=8, system=cached_system(), messages=user(PROMPT)
        )

        assert other.usage.cache_read_input_tokens == 0

    async def test_without_cache_control_nothing_is_cached(self, client: anthropic.AsyncAnthropic) -> None:
        await usage(client, system=SYSTEM_TEXT)
        again = await usage(client, system=SYSTEM_TEXT)

        assert again.cache_read_input_tokens == 0
        assert again.cache_creation_input_tokens == 0
        assert again.input_tokens == tokens(len(SYSTEM_TEXT) + len(PROMPT))

    async def test_one_hour_ttl_is_reported_apart(self, client: anthropic.AsyncAnthropic) -> None:
        first = await usage(client, system=cached_system(ttl="1h"))

        assert first.cache_creation is not None
        assert first.cache_creation.ephemeral_1h_input_tokens == first.cache_creation_input_tokens
        assert first.cache_creation.ephemeral_5m_input_tokens == 0


class TestBreakpoints:
    async def test_tools_then_system(self, client: anthropic.AsyncAnthropic) -> None:
        tool: ToolParam = {
            "name": "search",
            "description": "Search the knowledge base " * 10,
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
        tool_chars = len(orjson.dumps(tool))
        cached_tool: Any = {**tool, "cache_control": {"type": "ephemeral"}}

        first = await usage(client, tools=[cached_tool], system=cached_system())
        changed_system = await usage(client, tools=[cached_tool], system=cached_system("Another system prompt."))

        assert first.cache_creation_input_tokens == tokens(tool_chars + len(SYSTEM_TEXT))
        assert changed_system.cache_read_input_tokens == tokens(tool_chars)
        assert changed_system.cache_creation_input_tokens == tokens(
            tool_chars + len("Another system prompt.")
        ) - tokens(tool_chars)

    async def test_conversation_prefix_in_messages(self, client: anthropic.AsyncAnthropic) -> None:
        history: list[Any] = [
            {"role": "user", "content": [{"type": "text", "text": "A long question " * 20}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "A long answer " * 20, "cache_control": {"type": "ephemeral"}}],
            },
        ]
        prefix = tokens(len("A long question " * 20) + len("A long answer " * 20))

        await usage(client, messages=[*history, *user("first follow-up")])
        later = await usage(client, messages=[*history, *user("second follow-up")])

        assert later.cache_read_input_tokens == prefix

    async def test_request_level_cache_control_caches_everything(self, client: anthropic.AsyncAnthropic) -> None:
        automatic = {"extra_body": {"cache_control": {"type": "ephemeral"}}}
        total = tokens(len(SYSTEM_TEXT) + len(PROMPT))

        first = await usage(client, system=SYSTEM_TEXT, **automatic)
        second = await usage(client, system=SYSTEM_TEXT, **automatic)

        assert (first.input_tokens, first.cache_creation_input_tokens) == (0, total)
        assert (second.input_tokens, second.cache_read_input_tokens) == (0, total)


class TestAcrossTheApi:
    async def test_streaming_reports_the_same_counts(self, client: anthropic.AsyncAnthropic) -> None:
        await usage(client, system=cached_system())
        async with client.messages.stream(
            model=MODEL, max_tokens=8, system=cached_system(), messages=user(PROMPT)
        ) as stream:
            start_usage = None
            async for event in stream:
                if event.type == "message_start":
                    start_usage = event.message.usage
            final = await stream.get_final_message()

        assert start_usage is not None
        assert start_usage.cache_read_input_tokens == tokens(len(SYSTEM_TEXT))
        assert final.usage.cache_read_input_tokens == tokens(len(SYSTEM_TEXT))
        assert final.usage.input_tokens == start_usage.input_tokens

    async def test_count_tokens_counts_everything(self, client: anthropic.AsyncAnthropic) -> None:
        await usage(client, system=cached_system())

        counted = await client.messages.count_tokens(model=MODEL, system=cached_system(), messages=user(PROMPT))
        billed = await usage(client, system=cached_system())

        assert counted.input_tokens == tokens(len(SYSTEM_TEXT) + len(PROMPT))
        assert counted.input_tokens == (
            billed.input_tokens + (billed.cache_read_input_tokens or 0) + (billed.cache_creation_input_tokens or 0)
        )

    async def test_reset_forgets_the_cache(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            await usage(client, system=cached_system())
            await http.post("/_sim/reset")
            after = await usage(client, system=cached_system())

        assert after.cache_read_input_tokens == 0
        assert after.cache_creation_input_tokens == tokens(len(SYSTEM_TEXT))
