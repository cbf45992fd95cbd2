"""`POST /v1/messages` without streaming, through the real SDK."""

from __future__ import annotations

import math

import anthropic
from anthropic.types import TextBlock

from claude_gateway.simulator import SimulatorConfig

from .helpers import MODEL, MakeSimulator, sdk, user


def text_of(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert isinstance(block, TextBlock)
    return block.text


class TestMessage:
    async def test_is_a_complete_message_with_a_request_id(self, client: anthropic.AsyncAnthropic) -> None:
        raw = await client.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=user("Hello"))
        message = await raw.parse()

        assert raw.headers["content-type"] == "application/json"
        assert raw.headers["request-id"].startswith("req_01")
        assert message.id.startswith("msg_01")
        assert message.type == "message"
        assert message.role == "assistant"
        assert message.model == MODEL
        assert [block.type for block in message.content] == ["text"]
        assert message.stop_reason == "end_turn"
        assert message.stop_sequence is None

    async def test_reports_usage_in_every_field(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model=MODEL, max_tokens=256, messages=user("Hello"))

        assert message.usage.input_tokens == math.ceil(len("Hello") / 4)
        assert message.usage.output_tokens == SimulatorConfig().default_output_tokens
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0

    async def test_one_word_per_output_token(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model=MODEL, max_tokens=256, messages=user("Hello [[sim:tokens=12]]"))

        assert len(text_of(message).split()) == 12
        assert message.usage.output_tokens == 12
        assert text_of(message)[0].isupper()

    async def test_tokens_from_a_header(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("Hello"), extra_headers={"x-sim-tokens": "7"}
        )

        assert message.usage.output_tokens == 7

    async def test_max_tokens_caps_the_answer(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model=MODEL, max_tokens=5, messages=user("Hello"))

        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 5
        assert len(text_of(message).split()) == 5

    async def test_asking_exactly_max_tokens_is_a_natural_end(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model=MODEL, max_tokens=5, messages=user("Hello [[sim:tokens=5]]"))

        assert message.stop_reason == "end_turn"

    async def test_stops_before_a_stop_sequence(self, client: anthropic.AsyncAnthropic) -> None:
        full = text_of(await client.messages.create(model=MODEL, max_tokens=256, messages=user("Hello")))
        stop = " " + full.split()[5]
        cut = full[: full.index(stop)]

        message = await client.messages.create(
            model=MODEL, max_tokens=256, messages=user("Hello"), stop_sequences=["never-generated", stop]
        )

        assert message.stop_reason == "stop_sequence"
        assert message.stop_sequence == stop
        assert text_of(message) == cut
        assert message.usage.output_tokens == len(cut.split()) + 1

    async def test_system_prompt_counts_as_input(self, client: anthropic.AsyncAnthropic) -> None:
        system = "You are terse." * 3
        message = await client.messages.create(model=MODEL, max_tokens=16, system=system, messages=user("Hello"))

        assert message.usage.input_tokens == math.ceil((len(system) + len("Hello")) / 4)

    async def test_system_prompt_as_blocks(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL,
            max_tokens=16,
            system=[{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}],
            messages=user("Hello"),
        )

        assert message.usage.input_tokens == math.ceil(len("one twothreeHello") / 4)

    async def test_multi_turn(self, client: anthropic.AsyncAnthropic) -> None:
        first = await client.messages.create(model=MODEL, max_tokens=16, messages=user("Hello"))
        conversation = [*user("Hello"), first.to_param(), *user("And then?")]

        second = await client.messages.create(model=MODEL, max_tokens=16, messages=conversation)

        assert second.stop_reason == "max_tokens"
        assert text_of(second) != text_of(first)
        assert second.usage.input_tokens == math.ceil(len("Hello" + text_of(first) + "And then?") / 4)

    async def test_continues_a_prefilled_assistant_turn(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=[*user("Hello"), {"role": "assistant", "content": "Well,"}],
        )

        assert text_of(message).startswith(" ")


class TestDeterminism:
    async def test_the_same_request_gets_the_same_text(self, client: anthropic.AsyncAnthropic) -> None:
        first = await client.messages.create(model=MODEL, max_tokens=32, messages=user("Tell me"))
        second = await client.messages.create(model=MODEL, max_tokens=32, messages=user("Tell me"))

        assert text_of(first) == text_of(second)
        assert first.id != second.id

    async def test_a_shorter_answer_is_a_prefix(self, client: anthropic.AsyncAnthropic) -> None:
        long = await client.messages.create(model=MODEL, max_tokens=32, messages=user("Tell me"))
        short = await client.messages.create(model=MODEL, max_tokens=8, messages=user("Tell me"))

        assert text_of(long).startswith(text_of(short))

    async def test_another_request_gets_another_text(self, client: anthropic.AsyncAnthropic) -> None:
        first = await client.messages.create(model=MODEL, max_tokens=32, messages=user("Tell me"))
        second = await client.messages.create(model=MODEL, max_tokens=32, messages=user("Tell me more"))

        assert text_of(first) != text_of(second)

    async def test_the_seed_changes_the_text(self, make_simulator: MakeSimulator) -> None:
        texts = []
        for seed in (0, 0, 1):
            async with sdk(make_simulator(seed=seed).base_url) as seeded:
                texts.append(text_of(await seeded.messages.create(model=MODEL, max_tokens=32, messages=user("Hi"))))

        assert texts[0] == texts[1]
        assert texts[0] != texts[2]


class TestEmpty:
    async def test_empty_fault_has_no_content(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model=MODEL, max_tokens=64, messages=user("[[sim:fault=empty]]"))

        assert message.content == []
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens >= 1
