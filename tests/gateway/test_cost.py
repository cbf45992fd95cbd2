"""The cost of every request, from the simulator's real usage: on the answer (`X-Gateway-Cost-USD`), the access log
line, the spans and `claude_gateway_cost_usd_total`, each matched against a hand computation at the shipped prices."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Literal

import anthropic
import httpx
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from claude_gateway.admission.keys import short_name
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.sse_client import collect
from tests.support.access_log import access_lines, logged
from tests.telemetry.test_tracing import finished_spans, server_span

MODEL = "claude-sonnet-4-6"
CLIENT = short_name(CLIENT_KEY)
# Claude Sonnet 4.6 on Anthropic's pricing page, USD per million tokens, written out by hand (not read from the
# table under test): input, output, cache reads, 5-minute and 1-hour cache writes.
SONNET_4_6 = {"input": 3, "output": 15, "cache_read": "0.30", "write_5m": "3.75", "write_1h": 6}
HAIKU_4_5 = {"input": 1, "output": 5, "cache_read": "0.10", "write_5m": "1.25", "write_1h": 2}


def hand_cost(usage: dict[str, Any], prices: dict[str, Any] = SONNET_4_6) -> Decimal:
    """USD for a wire `usage`, computed the long way."""
    creation = usage.get("cache_creation") or {}
    write_1h = creation.get("ephemeral_1h_input_tokens") or 0
    write_5m = (usage.get("cache_creation_input_tokens") or 0) - write_1h
    parts = [
        (usage["input_tokens"], prices["input"]),
        (usage["output_tokens"], prices["output"]),
        (usage.get("cache_read_input_tokens") or 0, prices["cache_read"]),
        (write_5m, prices["write_5m"]),
        (write_1h, prices["write_1h"]),
    ]
    return sum((Decimal(tokens) * Decimal(str(price)) for tokens, price in parts), Decimal(0)) / Decimal(1_000_000)


def six_places(cost: Decimal) -> str:
    return f"{cost:.6f}"


def cached_system(ttl: Literal["5m", "1h"], marker: str) -> list[Any]:
    # Long enough that every direction costs something visible at six decimal places.
    text = f"{marker} You answer questions about the weather in careful detail. " * 120
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def cost_total(client: str, model: str) -> float:
    return REGISTRY.get_sample_value("claude_gateway_cost_usd_total", {"client": client, "model": model}) or 0.0


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    yield client
    await client.close()


class TestMessagesCost:
    async def test_cache_writes_by_ttl_and_reads_are_priced_apart(
        self, sdk: anthropic.AsyncAnthropic, caplog: pytest.LogCaptureFixture
    ) -> None:
        marker = uuid.uuid4().hex
        requests = [
            cached_system("1h", marker),  # a 1-hour write
            cached_system("1h", marker),  # a read of it
            cached_system("5m", marker + "-other"),  # a 5-minute write
        ]
        before = cost_total(CLIENT, MODEL)
        answers = []
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            for system in requests:
                raw = await sdk.messages.with_raw_response.create(
                    model=MODEL,
                    max_tokens=64,
                    system=system,
                    messages=[{"role": "user", "content": "Rain tomorrow? [[sim:tokens=40]]"}],
                )
                usage = orjson.loads(await raw.read())["usage"]
                answers.append((raw.headers["x-gateway-cost-usd"], usage))
            records = await access_lines(caplog, path="/v1/messages", count=len(requests))

        (written_1h, read, written_5m) = (usage for _, usage in answers)
        assert written_1h["cache_creation"]["ephemeral_1h_input_tokens"] > 0
        assert read["cache_read_input_tokens"] > 0
        assert written_5m["cache_creation"]["ephemeral_5m_input_tokens"] > 0
        for (header, usage), record in zip(answers, records, strict=True):
            expected = hand_cost(usage)
            assert header == six_places(expected)
            assert Decimal(str(logged(record, "cost_usd"))) == Decimal(six_places(expected))
            assert logged(record, "model") == MODEL
            assert logged(record, "client") == CLIENT
        # A 1-hour write costs 2x input, a 5-minute one 1.25x, a read 0.1x: the three differ at these sizes.
        assert len({header for header, _ in answers}) == 3
        total = sum(hand_cost(usage) for _, usage in answers)
        assert cost_total(CLIENT, MODEL) - before == pytest.approx(float(total), rel=1e-9)

    async def test_dated_id_is_priced_as_its_model(self, sdk: anthropic.AsyncAnthropic) -> None:
        raw = await sdk.messages.with_raw_response.create(
            model="claude-haiku-4-5-20251001",
            max_tokens=32,
            messages=[{"role": "user", "content": "Hello [[sim:tokens=12]]"}],
        )
        usage = orjson.loads(await raw.read())["usage"]
        assert raw.headers["x-gateway-cost-usd"] == six_places(hand_cost(usage, HAIKU_4_5))

    async def test_a_stream_carries_its_cost_in_its_log_line_and_span(
        self, sdk: anthropic.AsyncAnthropic, caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
    ) -> None:
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            async with sdk.messages.stream(
                model=MODEL,
                max_tokens=64,
                system=cached_system("1h", uuid.uuid4().hex),
                messages=[{"role": "user", "content": "Stream it [[sim:tokens=30]]"}],
            ) as stream:
                final = await stream.get_final_message()
            (record,) = await access_lines(caplog, path="/v1/messages")
        request = await server_span(spans, "/v1/messages")
        (call,) = await finished_spans(spans, f"chat {MODEL}")

        usage = final.usage.model_dump()
        # The 1-hour split comes in `message_start` only; `message_delta`'s usage does not repeat it.
        assert usage["cache_creation"]["ephemeral_1h_input_tokens"] > 0
        expected = Decimal(six_places(hand_cost(usage)))
        assert Decimal(str(logged(record, "cost_usd"))) == expected
        assert logged(record, "cache_write_1h_tokens") == usage["cache_creation"]["ephemeral_1h_input_tokens"]
        assert Decimal(str((request.attributes or {})["claude_gateway.cost_usd"])) == expected
        call_cost = (call.attributes or {})["claude_gateway.cost_usd"]
        assert isinstance(call_cost, float)
        assert call_cost == pytest.approx(float(expected), abs=1e-6)

    async def test_a_stream_cut_short_is_costed_from_what_was_recorded(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        body = {
            "model": MODEL,
            "max_tokens": 200,
            "stream": True,
            "messages": [{"role": "user", "content": "Go [[sim:fault=midstream_disconnect tokens=100]]"}],
        }
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            async with (
                httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http,
                http.stream("POST", "/v1/messages", json=body) as response,
            ):
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            (record,) = await access_lines(caplog, path="/v1/messages")

        events = [orjson.loads(line[6:]) for line in raw.splitlines() if line.startswith(b"data: ")]
        start = next(event for event in events if event["type"] == "message_start")["message"]["usage"]
        deltas = sum(1 for event in events if event["type"] == "content_block_delta")
        assert not any(event["type"] == "message_stop" for event in events)
        assert 0 < deltas < 100
        # What was recorded: the input of `message_start`, and at least a token per delta relayed.
        expected = hand_cost({**start, "output_tokens": max(start["output_tokens"], deltas)})
        assert Decimal(str(logged(record, "cost_usd"))) == Decimal(six_places(expected))
        assert logged(record, "output_tokens") == max(start["output_tokens"], deltas)


class TestChatCost:
    async def test_chat_answer_carries_its_cost(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
    ) -> None:
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
                response = await http.post("/chat", json={"message": "Hi there [[sim:tokens=25]]", "max_tokens": 64})
            (record,) = await access_lines(caplog, path="/chat")
        request = await server_span(spans, "/chat")
        answer = response.json()
        expected = hand_cost({"input_tokens": answer["input_tokens"], "output_tokens": answer["output_tokens"]})
        assert response.headers["x-gateway-cost-usd"] == six_places(expected)
        assert Decimal(str(logged(record, "cost_usd"))) == Decimal(six_places(expected))
        assert Decimal(str((request.attributes or {})["claude_gateway.cost_usd"])) == Decimal(six_places(expected))

    async def test_chat_stream_logs_its_cost(self, gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            async with (
                httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http,
                http.stream("POST", "/chat/stream", json={"message": "Stream [[sim:tokens=15]]"}) as response,
            ):
                events = await collect(response)
            (record,) = await access_lines(caplog, path="/chat/stream")
        assert "x-gateway-cost-usd" not in response.headers
        usage = next(event for event in events if isinstance(event, dict) and event.get("done"))["usage"]
        expected = hand_cost({"input_tokens": usage["input"], "output_tokens": usage["output"]})
        assert Decimal(str(logged(record, "cost_usd"))) == Decimal(six_places(expected))


class TestUnpriced:
    async def test_unpriced_model_is_served_counted_and_logged_once(
        self, sdk: anthropic.AsyncAnthropic, caplog: pytest.LogCaptureFixture
    ) -> None:
        model = f"claude-unreleased-{uuid.uuid4().hex[:8]}"
        before = REGISTRY.get_sample_value("claude_gateway_unpriced_tokens_total", {"model": "other"}) or 0.0
        totals = 0
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                raw = await sdk.messages.with_raw_response.create(
                    model=model, max_tokens=16, messages=[{"role": "user", "content": "Hi [[sim:tokens=5]]"}]
                )
                assert raw.http_response.status_code == 200
                assert "x-gateway-cost-usd" not in raw.headers
                usage = orjson.loads(await raw.read())["usage"]
                totals += usage["input_tokens"] + usage["output_tokens"]
            records = await access_lines(caplog, path="/v1/messages", count=3)
        after = REGISTRY.get_sample_value("claude_gateway_unpriced_tokens_total", {"model": "other"}) or 0.0
        assert after - before == totals
        warnings = [
            r for r in caplog.records if r.name == "claude_gateway.upstream.usage" and logged(r, "model") == model
        ]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert all(logged(record, "cost_usd") is None for record in records)


def model_labels(exposition: str) -> dict[str, set[str]]:
    """Each metric family's `model` label values in a /metrics text."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if "model" in sample.labels:
                labels.setdefault(family.name, set()).add(sample.labels["model"])
    return labels


class TestBoundedModelLabels:
    async def test_invented_model_names_leave_real_models_labels_intact(self, gateway: Gateway) -> None:
        invented = [f"claude-invented-{uuid.uuid4().hex[:6]}-{index}" for index in range(100)]
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            # The registry is this test process's: labels other gateways (other price tables) left stay allowed.
            earlier = model_labels((await http.get(gateway.metrics_url + "/metrics")).text)
            for start in range(0, len(invented), 20):
                await asyncio.gather(
                    *(
                        http.post(
                            "/v1/messages",
                            json={"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
                        )
                        for name in invented[start : start + 20]
                    )
                )
            for real in (MODEL, "claude-haiku-4-5-20251001", "claude-opus-4-6"):
                answer = await http.post(
                    "/v1/messages",
                    json={"model": real, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
                )
                assert answer.status_code == 200
            labels = model_labels((await http.get(gateway.metrics_url + "/metrics")).text)

        allowed = set(gateway.settings.price_table.models) | {"other"}
        assert labels, "no series with a model label"
        for name, models in labels.items():
            assert models <= allowed | earlier.get(name, set()), (name, models - allowed)
            assert not any(model.startswith("claude-invented-") for model in models)
        for real in (MODEL, "claude-haiku-4-5", "claude-opus-4-6"):
            assert real in labels["claude_gateway_tokens"]
            assert real in labels["claude_gateway_cost_usd"]
        assert "other" in labels["claude_gateway_tokens"]
