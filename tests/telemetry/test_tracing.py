"""Traces: the request span, its `chat {model}` child with the GenAI attributes, and logs that name both."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Callable, Sequence

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from claude_gateway.telemetry.logs import build_handler
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.sse_client import collect

MODEL = "claude-sonnet-4-6"
PROMPT_MARKER = "zebra-quartz-prompt-8812"
LOG_LINE_DEADLINE_S = 10.0


async def finished_spans(spans: InMemorySpanExporter, name: str, count: int = 1) -> Sequence[ReadableSpan]:
    """Spans end when the response has been sent; give the server a moment to get there."""
    for _ in range(100):
        found = [span for span in spans.get_finished_spans() if span.name == name]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no finished span {name!r}: {[s.name for s in spans.get_finished_spans()]}")


async def server_span(spans: InMemorySpanExporter, route: str) -> ReadableSpan:
    """The request's own span (FastAPI instrumentation), which ends after the response's last byte."""
    (span,) = await finished_spans(spans, f"POST {route}")
    assert span.kind == SpanKind.SERVER
    return span


class TestChatSpan:
    async def test_chat_span_is_a_child_of_the_request_span(
        self, gateway: Gateway, spans: InMemorySpanExporter
    ) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            answer = (await http.post("/chat", json={"message": "hi [[sim:tokens=9]]", "max_tokens": 50})).json()
        (chat,) = await finished_spans(spans, f"chat {MODEL}")
        request = await server_span(spans, "/chat")
        assert chat.context.trace_id == request.context.trace_id
        assert chat.parent is not None
        assert chat.parent.span_id == request.context.span_id
        attributes = dict(chat.attributes or {})
        assert attributes["gen_ai.provider.name"] == "anthropic"
        assert attributes["gen_ai.system"] == "anthropic"
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["gen_ai.request.max_tokens"] == 50
        assert attributes["gen_ai.response.id"] == answer["id"]
        assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
        assert attributes["gen_ai.usage.input_tokens"] == answer["input_tokens"]
        assert attributes["gen_ai.usage.output_tokens"] == 9
        assert attributes["gen_ai.usage.cache_read.input_tokens"] == 0
        assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 0
        assert chat.kind == SpanKind.CLIENT

    async def test_stream_span_gets_usage_when_the_stream_ends(
        self, gateway: Gateway, spans: InMemorySpanExporter
    ) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            async with http.stream("POST", "/chat/stream", json={"message": "hi [[sim:tokens=14]]"}) as response:
                events = await collect(response)
        (chat,) = await finished_spans(spans, f"chat {MODEL}")
        attributes = dict(chat.attributes or {})
        assert attributes["gen_ai.request.stream"] is True
        assert attributes["gen_ai.usage.output_tokens"] == 14
        assert attributes["gen_ai.usage.input_tokens"] == events[-2]["usage"]["input"]
        assert str(attributes["gen_ai.response.id"]).startswith("msg_")
        assert chat.parent is not None
        assert chat.parent.span_id == (await server_span(spans, "/chat/stream")).context.span_id

    async def test_cache_tokens_on_the_span(self, gateway: Gateway, spans: InMemorySpanExporter) -> None:
        cached_system = [
            {"type": "text", "text": "A long shared preamble. " * 200, "cache_control": {"type": "ephemeral"}}
        ]
        body = {
            "model": MODEL,
            "max_tokens": 16,
            "system": cached_system,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            first = (await http.post("/v1/messages", json=body)).json()
            second = (await http.post("/v1/messages", json=body)).json()
        first_span, second_span = await finished_spans(spans, f"chat {MODEL}", count=2)
        assert first["usage"]["cache_creation_input_tokens"] > 0
        assert second["usage"]["cache_read_input_tokens"] > 0
        assert first_span.attributes is not None
        assert second_span.attributes is not None
        assert (
            first_span.attributes["gen_ai.usage.cache_creation.input_tokens"]
            == first["usage"]["cache_creation_input_tokens"]
        )
        assert (
            second_span.attributes["gen_ai.usage.cache_read.input_tokens"] == second["usage"]["cache_read_input_tokens"]
        )

    async def test_failed_call_marks_the_span(self, gateway: Gateway, spans: InMemorySpanExporter) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            async with http.stream(
                "POST", "/chat/stream", json={"message": "[[sim:fault=midstream_overloaded tokens=20]]"}
            ) as response:
                await collect(response)
        (chat,) = await finished_spans(spans, f"chat {MODEL}")
        assert chat.status.status_code == StatusCode.ERROR
        assert dict(chat.attributes or {})["error.type"] == "UpstreamOverloaded"


class TestContent:
    async def test_no_prompt_or_answer_text_by_default(self, gateway: Gateway, spans: InMemorySpanExporter) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            answer = (await http.post("/chat", json={"message": PROMPT_MARKER})).json()
        await finished_spans(spans, f"chat {MODEL}")
        text = json.dumps([dict(span.attributes or {}) for span in spans.get_finished_spans()], default=str)
        assert PROMPT_MARKER not in text
        assert answer["text"] not in text

    async def test_operator_can_turn_content_capture_on(
        self, make_gateway: Callable[..., Gateway], spans: InMemorySpanExporter
    ) -> None:
        gateway = make_gateway(otel_instrumentation_genai_capture_message_content=True)
        try:
            async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
                answer = (await http.post("/chat", json={"message": PROMPT_MARKER})).json()
            (chat,) = await finished_spans(spans, f"chat {MODEL}")
        finally:
            from claude_gateway.telemetry import tracing

            tracing.set_content_capture(False)
        attributes = dict(chat.attributes or {})
        assert PROMPT_MARKER in str(attributes["gen_ai.input.messages"])
        assert answer["text"] in str(attributes["gen_ai.output.messages"])


class TestLogs:
    async def test_json_log_lines_carry_the_request_trace(self, gateway: Gateway, spans: InMemorySpanExporter) -> None:
        stream = io.StringIO()
        handler = build_handler(stream, "json")
        access = logging.getLogger("claude_gateway.access")
        access.addHandler(handler)
        previous = access.level
        access.setLevel(logging.INFO)
        try:
            async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
                await http.post("/chat", json={"message": "hi"})
            request = await server_span(spans, "/chat")
            # The line is written once the request ends, after its answer's last byte (and its settlement).
            deadline = time.monotonic() + LOG_LINE_DEADLINE_S
            while not (lines := [text for text in stream.getvalue().splitlines() if '"path":"/chat"' in text]):
                assert time.monotonic() < deadline, "no access log line for /chat"
                await asyncio.sleep(0.01)
        finally:
            access.removeHandler(handler)
            access.setLevel(previous)
        line = json.loads(lines[0])
        assert line["trace_id"] == format(request.context.trace_id, "032x")
        assert line["span_id"] == format(request.context.span_id, "016x")
        assert line["client"].startswith("key-")
        assert line["status_code"] == 200
