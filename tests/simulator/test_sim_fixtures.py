"""The recorded SSE fixtures in tests/fixtures/sse: current with the simulator, and replayable into the SDK."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx2
import pytest
from anthropic.types import TextBlock, ToolUseBlock

from claude_gateway.simulator.record import FIXTURES, record_all

from .helpers import MODEL, names, parse_sse, user

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "sse"


def replaying(name: str) -> anthropic.AsyncAnthropic:
    """The SDK reading a fixture as the response to any request."""
    raw = (FIXTURE_DIR / name).read_bytes()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    transport = httpx2.MockTransport(answer)
    return anthropic.AsyncAnthropic(
        api_key="replay", max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )


def test_fixtures_are_what_the_simulator_sends_now(tmp_path: Path) -> None:
    record_all(tmp_path)

    for name in FIXTURES:
        assert (tmp_path / name).read_bytes() == (FIXTURE_DIR / name).read_bytes(), (
            f"{name} is stale: run `make sse-fixtures`"
        )


def test_fixture_event_sequences() -> None:
    basic = names(parse_sse((FIXTURE_DIR / "basic.txt").read_bytes()))
    tool_use = names(parse_sse((FIXTURE_DIR / "tool_use.txt").read_bytes()))
    error = names(parse_sse((FIXTURE_DIR / "error_midstream.txt").read_bytes()))

    assert basic == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 8,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    assert tool_use.count("content_block_start") == 2
    assert tool_use[-1] == "message_stop"
    assert error[-1] == "error"
    assert "message_stop" not in error


async def test_basic_replays_into_the_sdk() -> None:
    async with (
        replaying("basic.txt") as client,
        client.messages.stream(model=MODEL, max_tokens=64, messages=user("Say hello.")) as stream,
    ):
        final = await stream.get_final_message()

    assert isinstance(final.content[0], TextBlock)
    assert len(final.content[0].text.split()) == 8
    assert final.usage.output_tokens == 8


async def test_tool_use_replays_into_the_sdk() -> None:
    async with (
        replaying("tool_use.txt") as client,
        client.messages.stream(model=MODEL, max_tokens=64, messages=user("weather")) as stream,
    ):
        final = await stream.get_final_message()

    tool = final.content[1]
    assert isinstance(tool, ToolUseBlock)
    assert tool.name == "get_weather"
    assert tool.input["unit"] == "celsius"
    assert final.stop_reason == "tool_use"


async def test_error_midstream_replays_as_an_error() -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with (
            replaying("error_midstream.txt") as client,
            client.messages.stream(model=MODEL, max_tokens=64, messages=user("hi")) as stream,
        ):
            await stream.get_final_message()

    assert caught.value.type == "overloaded_error"
