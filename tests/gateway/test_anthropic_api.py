"""`/v1/*` as a faithful Anthropic API: answers and refusals relayed as they came, no validation stricter than the
API's, duplicate fields refused, the query string ignored, the base URL answering probes, attribution recorded.

Each test runs a real gateway over HTTP in front of the real simulator (or a scripted upstream on a real socket where
the simulator cannot say it: `x-should-retry`, a stream cut inside an event)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from claude_gateway import tracing
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_stream import sim_stats
from tests.support.scripted_upstream import chunk, read_request, upstream
from tests.support.servers import Process, start_simulator

MODEL = "claude-sonnet-4-6"
# Its maximum output in the simulator's catalogue is 128000, as the API's is.
LARGE_OUTPUT_MODEL = "claude-opus-4-6"
HELLO: Any = [{"role": "user", "content": "Hello [[sim:tokens=3]]"}]
MID_CONVERSATION_SYSTEM: Any = [
    {"role": "user", "content": "Hello"},
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Again"},
]
MID_CONVERSATION_BETA = "mid-conversation-system-2026-04-07"
UPSTREAM_KEY = "sk-ant-the-right-one-4f1d2a"


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def direct(simulator: Process) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The same SDK straight to the simulator: what the gateway must answer too."""
    client = anthropic.AsyncAnthropic(base_url=simulator.url, api_key="sk-ant-direct", max_retries=0)
    yield client
    await client.close()


async def post(
    gateway: Gateway, body: bytes | dict[str, Any], path: str = "/v1/messages", **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        return await http.post(
            path,
            content=content,
            headers={
                "x-api-key": CLIENT_KEY,
                "anthropic-version": "2023-06-01",
                "content-type": "application/json",
                **headers,
            },
        )


class TestSameAnswersAsStraight:
    """The official Python SDK through the gateway and straight to the simulator: the same answers but for ids."""

    async def test_messages_create(self, sdk: anthropic.AsyncAnthropic, direct: anthropic.AsyncAnthropic) -> None:
        params: Any = {"model": MODEL, "max_tokens": 32, "system": "Be terse.", "messages": HELLO}
        through = await sdk.messages.create(**params)
        straight = await direct.messages.create(**params)
        assert through.model_dump(exclude={"id"}) == straight.model_dump(exclude={"id"})
        assert through.usage.output_tokens == 3

    async def test_messages_stream(self, sdk: anthropic.AsyncAnthropic, direct: anthropic.AsyncAnthropic) -> None:
        async def streamed(client: anthropic.AsyncAnthropic) -> tuple[list[str], list[str], anthropic.types.Message]:
            async with client.messages.stream(model=MODEL, max_tokens=32, messages=HELLO) as stream:
                kinds: list[str] = []
                texts: list[str] = []
                async for event in stream:
                    kinds.append(event.type)
                    if event.type == "text":
                        texts.append(event.text)
                return kinds, texts, await stream.get_final_message()

        through, straight = await streamed(sdk), await streamed(direct)
        assert through[:2] == straight[:2]
        assert through[2].model_dump(exclude={"id"}) == straight[2].model_dump(exclude={"id"})
        assert len(through[1]) == 3


class TestErrorsRelayedVerbatim:
    async def test_a_refused_body_raises_with_anthropics_own_message(
        self, sdk: anthropic.AsyncAnthropic, direct: anthropic.AsyncAnthropic
    ) -> None:
        with pytest.raises(anthropic.BadRequestError) as straight:
            await direct.messages.create(model=MODEL, max_tokens=16, messages=MID_CONVERSATION_SYSTEM)
        with pytest.raises(anthropic.BadRequestError) as through:
            await sdk.messages.create(model=MODEL, max_tokens=16, messages=MID_CONVERSATION_SYSTEM)

        assert through.value.type == "invalid_request_error"
        assert through.value.body["error"] == straight.value.body["error"]  # type: ignore[index]
        assert through.value.body["error"] == {  # type: ignore[index]
            "type": "invalid_request_error",
            "message": "messages.1.role: Input should be 'user' or 'assistant'",
        }
        assert through.value.request_id is not None
        assert through.value.request_id.startswith("req_")

    async def test_the_same_body_with_its_beta_passes(self, sdk: anthropic.AsyncAnthropic) -> None:
        message = await sdk.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=MID_CONVERSATION_SYSTEM,
            extra_headers={"anthropic-beta": MID_CONVERSATION_BETA},
        )
        assert message.type == "message"

    async def test_a_refused_stream_raises_with_anthropics_own_message(self, sdk: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.BadRequestError) as raised:
            async with sdk.messages.stream(model=MODEL, max_tokens=16, messages=MID_CONVERSATION_SYSTEM) as stream:
                await stream.get_final_message()
        assert raised.value.body["error"]["message"] == "messages.1.role: Input should be 'user' or 'assistant'"  # type: ignore[index]

    @pytest.mark.parametrize(
        ("fault", "exception", "status", "kind", "message"),
        [
            (
                "rate_limit",
                anthropic.RateLimitError,
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization (simulated).",
            ),
            ("overloaded", anthropic.OverloadedError, 529, "overloaded_error", "Overloaded"),
            ("server_error", anthropic.InternalServerError, 500, "api_error", "Internal server error"),
            ("bad_request", anthropic.BadRequestError, 400, "invalid_request_error", "Simulated bad request."),
            ("not_found", anthropic.NotFoundError, 404, "not_found_error", f"model: {MODEL}"),
            (
                "permission",
                anthropic.PermissionDeniedError,
                403,
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
        ],
    )
    async def test_upstream_refusals_reach_the_sdk_as_sent(
        self,
        sdk: anthropic.AsyncAnthropic,
        fault: str,
        exception: type[anthropic.APIStatusError],
        status: int,
        kind: str,
        message: str,
    ) -> None:
        with pytest.raises(exception) as raised:
            await sdk.messages.create(
                model=MODEL, max_tokens=8, messages=[{"role": "user", "content": f"[[sim:fault={fault}]]"}]
            )
        assert raised.value.status_code == status
        assert raised.value.body["error"] == {"type": kind, "message": message}  # type: ignore[index]

    async def test_a_429_keeps_retry_after_and_request_id(self, gateway: Gateway) -> None:
        response = await post(
            gateway,
            {
                "model": MODEL,
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "[[sim:fault=rate_limit retry_after=17]]"}],
            },
        )
        assert response.status_code == 429
        assert response.headers["retry-after"] == "17"
        body = response.json()
        # The upstream's own request id, in its header and in its body, as Anthropic sent them.
        assert response.headers["request-id"] == body["request_id"]
        assert body["request_id"].startswith("req_")
        # The gateway's id of the same request is apart from it.
        assert response.headers["x-request-id"] != body["request_id"]

    async def test_x_should_retry_and_retry_after_ms_are_relayed(self, make_gateway: Callable[..., Gateway]) -> None:
        error = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded, truly"},"request_id":"req_scripted"}'

        async def overloaded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 529 Overloaded\r\ncontent-type: application/json\r\nrequest-id: req_scripted\r\n"
                b"x-should-retry: false\r\nretry-after: 3\r\nretry-after-ms: 2500\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(error), error)
            )
            await writer.drain()

        async with upstream(overloaded) as scripted:
            gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{scripted.port}")
            response = await post(gateway, {"model": MODEL, "max_tokens": 8, "messages": HELLO})

        assert response.status_code == 529
        assert response.content == error
        assert response.headers["x-should-retry"] == "false"
        assert response.headers["retry-after"] == "3"
        assert response.headers["retry-after-ms"] == "2500"
        assert response.headers["request-id"] == "req_scripted"

    async def test_an_upstream_answer_that_is_no_anthropic_error_is_not_relayed(
        self, make_gateway: Callable[..., Gateway]
    ) -> None:
        page = b"<html>502 Bad Gateway from some proxy</html>"

        async def proxy_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: %d\r\n\r\n%s" % (len(page), page))
            await writer.drain()

        async with upstream(proxy_page) as scripted:
            gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{scripted.port}")
            response = await post(gateway, {"model": MODEL, "max_tokens": 8, "messages": HELLO})

        assert response.status_code == 502
        assert response.json()["error"] == {"type": "api_error", "message": "Claude API error"}

    async def test_chat_keeps_its_clean_mapping(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat", json={"message": "[[sim:fault=bad_request]]"}, headers=gateway.headers()
            )
        assert response.status_code == 400
        assert response.json() == {"detail": "Claude API rejected the request as invalid"}


@pytest.fixture(scope="module")
def keyed_simulator() -> Iterator[Process]:
    """A simulator that takes only `UPSTREAM_KEY`: a gateway with another key is misconfigured."""
    process = start_simulator("--api-key", UPSTREAM_KEY, "--ttft-ms", "5")
    yield process
    process.stop()


class TestBadUpstreamKey:
    @pytest.fixture
    def misconfigured(self, make_gateway: Callable[..., Gateway], keyed_simulator: Process) -> Gateway:
        return make_gateway(anthropic_base_url=keyed_simulator.url, anthropic_api_key="sk-ant-a-wrong-one-000")

    async def test_an_upstream_401_is_a_500_internal_configuration_error(self, misconfigured: Gateway) -> None:
        async with anthropic.AsyncAnthropic(base_url=misconfigured.url, api_key=CLIENT_KEY, max_retries=0) as sdk:
            with pytest.raises(anthropic.InternalServerError) as raised:
                await sdk.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
            with pytest.raises(anthropic.InternalServerError) as streamed:
                async with sdk.messages.stream(model=MODEL, max_tokens=8, messages=HELLO) as stream:
                    await stream.get_final_message()
        for error in (raised.value, streamed.value):
            assert error.status_code == 500
            assert error.body["error"] == {  # type: ignore[index]
                "type": "api_error",
                "message": "Internal configuration error",
            }

    async def test_the_right_key_passes(self, make_gateway: Callable[..., Gateway], keyed_simulator: Process) -> None:
        gateway = make_gateway(anthropic_base_url=keyed_simulator.url, anthropic_api_key=UPSTREAM_KEY)
        response = await post(gateway, {"model": MODEL, "max_tokens": 8, "messages": HELLO})
        assert response.status_code == 200


class TestNoStricterThanTheApi:
    # Streamed, as Claude Code asks (the SDK refuses a non-streamed call this large before it is sent).
    async def test_max_tokens_up_to_the_models_maximum_passes(self, sdk: anthropic.AsyncAnthropic) -> None:
        async with sdk.messages.stream(model=LARGE_OUTPUT_MODEL, max_tokens=128_000, messages=HELLO) as stream:
            message = await stream.get_final_message()
        assert message.usage.output_tokens == 3

    async def test_past_the_models_maximum_it_is_anthropics_refusal(self, sdk: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.BadRequestError) as raised:
            async with sdk.messages.stream(model=LARGE_OUTPUT_MODEL, max_tokens=128_001, messages=HELLO) as stream:
                await stream.get_final_message()
        assert "128000" in raised.value.body["error"]["message"]  # type: ignore[index]
        assert raised.value.request_id is not None  # Anthropic's (the simulator's) answer, not the gateway's

    async def test_chat_keeps_max_tokens_limit(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat", json={"message": "hi", "max_tokens": 128_000}, headers=gateway.headers()
            )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "max_tokens"]

    async def test_unknown_fields_roles_and_blocks_go_to_anthropic_untouched(
        self, gateway: Gateway, simulator: Process
    ) -> None:
        body = {
            "model": MODEL,
            "max_tokens": 8,
            "messages": MID_CONVERSATION_SYSTEM,
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "high"},
            "tools": [{"type": "some_future_tool_20300101", "name": "future"}],
            "a_field_no_api_has_yet": [1, {"x": None}],
        }
        raw = orjson.dumps(body)
        response = await post(gateway, raw, **{"anthropic-beta": MID_CONVERSATION_BETA})
        assert response.status_code == 200
        seen: dict[str, Any] = await sim_stats(simulator)
        assert seen["last_request"] == body

    async def test_every_anthropic_beta_header_is_passed_on(self, gateway: Gateway, simulator: Process) -> None:
        body = orjson.dumps({"model": MODEL, "max_tokens": 8, "messages": MID_CONVERSATION_SYSTEM})
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/v1/messages",
                content=body,
                headers=[
                    ("x-api-key", CLIENT_KEY),
                    ("content-type", "application/json"),
                    ("anthropic-beta", "claude-code-20250219"),
                    ("anthropic-beta", MID_CONVERSATION_BETA),
                ],
            )
        assert response.status_code == 200, response.text
        seen: dict[str, Any] = await sim_stats(simulator)
        assert seen["last_headers"]["anthropic-beta"] == f"claude-code-20250219,{MID_CONVERSATION_BETA}"

    async def test_empty_messages_are_anthropics_to_refuse(self, gateway: Gateway) -> None:
        response = await post(gateway, {"model": MODEL, "max_tokens": 8, "messages": []})
        assert response.status_code == 400
        assert "request_id" in response.json()  # the simulator's refusal, relayed

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"max_tokens": 8, "messages": HELLO}, "model: Field required"),
            ({"model": 7, "max_tokens": 8, "messages": HELLO}, "model: Input should be a non-empty string"),
            ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
            ({"model": MODEL, "max_tokens": "8", "messages": HELLO}, "max_tokens: Input should be a valid integer"),
            (
                {"model": MODEL, "max_tokens": 8, "stream": "yes", "messages": HELLO},
                "stream: Input should be a valid boolean",
            ),
        ],
    )
    async def test_what_the_gateway_reads_it_must_be_able_to_read(
        self, gateway: Gateway, simulator: Process, body: dict[str, Any], message: str
    ) -> None:
        before = (await sim_stats(simulator))["requests"]
        response = await post(gateway, body)
        assert response.status_code == 400
        assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
        assert (await sim_stats(simulator))["requests"] == before


class TestDuplicateFields:
    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            (b'{"model":"claude-sonnet-4-6","max_tokens":8,"max_tokens":100000,"messages":[]}', "max_tokens"),
            (b'{"model":"claude-sonnet-4-6","model":"claude-opus-4-6","max_tokens":8,"messages":[]}', "model"),
            (b'{"stream":false,"model":"claude-sonnet-4-6","max_tokens":8,"messages":[],"stream":true}', "stream"),
            (b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[],"tools":[],"tools":[]}', "tools"),
            (
                b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[],"service_tier":"auto", "service_tier":"x"}',
                "service_tier",
            ),
            (b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[],"metadata":{},"metadata":{}}', "metadata"),
            # The second spelled with escapes: the same name once decoded.
            (b'{"model":"claude-sonnet-4-6","\\u006dodel":"claude-opus-4-6","max_tokens":8,"messages":[]}', "model"),
            (b'{"max_tokens":8,"model":"claude-sonnet-4-6","messages":[],"max_tok\\u0065ns":9}', "max_tokens"),
        ],
    )
    async def test_a_field_the_gateway_reads_twice_is_refused(
        self, gateway: Gateway, simulator: Process, raw: bytes, field: str
    ) -> None:
        before = (await sim_stats(simulator))["requests"]
        response = await post(gateway, raw)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith(f"{field}: appears more than once")
        assert (await sim_stats(simulator))["requests"] == before

    async def test_the_same_names_nested_pass(self, gateway: Gateway) -> None:
        # Claude Code's own shape: its Agent tool has a `model` parameter, and metadata sits beside tools.
        body = {
            "model": MODEL,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": 'quote "model" and "stream" [[sim:tokens=2]]'}],
            "tools": [
                {
                    "name": "Agent",
                    "input_schema": {"type": "object", "properties": {"model": {"type": "string"}, "stream": {}}},
                }
            ],
            "metadata": {"user_id": "user-1"},
        }
        response = await post(gateway, body)
        assert response.status_code == 200, response.text

    async def test_a_duplicate_the_gateway_does_not_read_is_anthropics_business(self, gateway: Gateway) -> None:
        raw = b'{"model":"claude-sonnet-4-6","max_tokens":8,"temperature":1,"temperature":0.5,"messages":[{"role":"user","content":"hi"}]}'
        response = await post(gateway, raw)
        assert response.status_code == 200

    async def test_count_tokens_refuses_a_second_model(self, gateway: Gateway) -> None:
        raw = b'{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"hi"}],"model":"claude-opus-4-6"}'
        response = await post(gateway, raw, "/v1/messages/count_tokens")
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith("model: appears more than once")


class TestPaths:
    async def test_the_query_string_plays_no_part_in_matching(self, gateway: Gateway, simulator: Process) -> None:
        response = await post(gateway, {"model": MODEL, "max_tokens": 8, "messages": HELLO}, "/v1/messages?beta=true")
        assert response.status_code == 200
        assert response.json()["type"] == "message"

    async def test_count_tokens_with_a_query_string(self, gateway: Gateway) -> None:
        response = await post(gateway, {"model": MODEL, "messages": HELLO}, "/v1/messages/count_tokens?beta=true")
        assert response.status_code == 200
        assert response.json()["input_tokens"] > 0

    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    async def test_the_base_url_answers_a_probe(self, gateway: Gateway, method: str) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.request(method, "/")
        assert response.status_code == 200
        assert response.content == (b"" if method == "HEAD" else b'{"status":"ok"}')

    @pytest.mark.parametrize(
        ("method", "path"), [("GET", "/v1/nothing-here"), ("POST", "/v1/complete"), ("GET", "/v1/messages/abc/def")]
    )
    async def test_other_paths_under_v1_are_anthropics_404(self, gateway: Gateway, method: str, path: str) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            response = await http.request(method, path)
        assert response.status_code == 404
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "not_found_error"


class TestStreamCutShort:
    async def test_a_cut_inside_an_event_is_ended_before_the_error_event(
        self, make_gateway: Callable[..., Gateway]
    ) -> None:
        start = b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_cut","usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
        half = b'event: content_block_delta\ndata: {"type":"content_block_delta","ind'

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(chunk(start) + chunk(half))
            await writer.drain()
            writer.transport.abort()  # no last chunk: the stream breaks off

        async with upstream(cut) as scripted:
            gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{scripted.port}")
            async with (
                httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
                http.stream(
                    "POST",
                    "/v1/messages",
                    json={"model": MODEL, "max_tokens": 8, "stream": True, "messages": HELLO},
                    headers={"x-api-key": CLIENT_KEY},
                ) as response,
            ):
                raw = b"".join([piece async for piece in response.aiter_raw()])

        assert raw.startswith(start + half)
        blocks = raw[len(start) :].split(b"\n\n")
        assert blocks[0] == half  # ended by a blank line of its own
        assert blocks[1].startswith(b"event: error\ndata: ")
        error = orjson.loads(blocks[1].split(b"data: ", 1)[1])
        assert error == {"type": "error", "error": {"type": "api_error", "message": "Claude API error"}}
        assert blocks[2:] == [b""]

    async def test_a_cut_between_events_adds_no_blank_line(self, make_gateway: Callable[..., Gateway]) -> None:
        start = b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_cut","usage":{"input_tokens":3}}}\n\n'

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(chunk(start))
            await writer.drain()
            writer.transport.abort()

        async with upstream(cut) as scripted:
            gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{scripted.port}")
            async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0) as sdk:
                with pytest.raises(anthropic.APIStatusError) as raised:
                    async with sdk.messages.stream(model=MODEL, max_tokens=8, messages=HELLO) as stream:
                        await stream.get_final_message()
        # The SDK read the gateway's in-band error event as Anthropic's own.
        assert raised.value.type == "api_error"


class TestAttribution:
    SESSION = "c3ff40b8-b1d2-4b05-a74a-a2124d835693"
    USER = '{"device_id":"1dad01e8","account_uuid":"","session_id":"c3ff40b8"}'

    async def test_session_user_and_betas_on_the_log_line_and_the_request_span(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
    ) -> None:
        caplog.set_level(logging.INFO, logger="claude_gateway.access")
        response = await post(
            gateway,
            {"model": MODEL, "max_tokens": 8, "messages": HELLO, "metadata": {"user_id": self.USER}},
            "/v1/messages?beta=true",
            **{
                "x-claude-code-session-id": self.SESSION,
                "anthropic-beta": f"claude-code-20250219, {MID_CONVERSATION_BETA}",
            },
        )
        assert response.status_code == 200
        line = await access_line(caplog, "/v1/messages")
        assert line.session_id == self.SESSION  # type: ignore[attr-defined]
        assert line.user_id == self.USER  # type: ignore[attr-defined]
        request_span = await span_with(spans, tracing.SESSION_ID_ATTRIBUTE)
        attributes = request_span.attributes or {}
        assert attributes[tracing.SESSION_ID_ATTRIBUTE] == self.SESSION
        assert attributes[tracing.USER_ID_ATTRIBUTE] == self.USER
        assert list(attributes[tracing.BETAS_ATTRIBUTE]) == ["claude-code-20250219", MID_CONVERSATION_BETA]
        assert request_span.kind.name == "SERVER"

    async def test_attribution_is_bounded(self, gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="claude_gateway.access")
        response = await post(
            gateway,
            {"model": MODEL, "max_tokens": 8, "messages": HELLO, "metadata": {"user_id": "u" * 5000}},
            **{"x-claude-code-session-id": "s" * 5000},
        )
        assert response.status_code == 200
        line = await access_line(caplog, "/v1/messages")
        assert line.session_id == "s" * 256  # type: ignore[attr-defined]
        assert line.user_id == "u" * 256  # type: ignore[attr-defined]

    async def test_attribution_is_never_a_metric_label(self, gateway: Gateway) -> None:
        await post(
            gateway,
            {"model": MODEL, "max_tokens": 8, "messages": HELLO, "metadata": {"user_id": "label-user-x1"}},
            **{"x-claude-code-session-id": "label-session-y2"},
        )
        from prometheus_client import REGISTRY, generate_latest

        exposition = generate_latest(REGISTRY).decode()
        assert "label-user-x1" not in exposition
        assert "label-session-y2" not in exposition


async def access_line(caplog: pytest.LogCaptureFixture, path: str) -> logging.LogRecord:
    """The access log line of the request to `path` (it is written just after the answer's last byte)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        lines = [r for r in caplog.records if r.name == "claude_gateway.access" and getattr(r, "path", None) == path]
        if lines or asyncio.get_running_loop().time() > deadline:
            assert lines, f"no access line for {path}"
            return lines[-1]
        await asyncio.sleep(0.01)


async def span_with(spans: InMemorySpanExporter, attribute: str) -> Any:
    """The finished span that carries `attribute` (the request span ends with the answer's last byte)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        found = [span for span in spans.get_finished_spans() if attribute in (span.attributes or {})]
        if found or asyncio.get_running_loop().time() > deadline:
            assert found, f"no span with {attribute}"
            return found[-1]
        await asyncio.sleep(0.01)
