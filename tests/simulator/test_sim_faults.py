"""Faults on demand, each as the SDK sees it."""

from __future__ import annotations

import time

import anthropic
import httpx
import httpx2
import pytest

from .helpers import MODEL, MakeSimulator, body, names, parse_sse, raw_http, sdk, stats, user

STATUS_FAULTS = [
    ("rate_limit", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("overloaded", anthropic.OverloadedError, 529, "overloaded_error"),
    ("server_error", anthropic.InternalServerError, 500, "api_error"),
    ("auth", anthropic.AuthenticationError, 401, "authentication_error"),
    ("permission", anthropic.PermissionDeniedError, 403, "permission_error"),
    ("not_found", anthropic.NotFoundError, 404, "not_found_error"),
    ("bad_request", anthropic.BadRequestError, 400, "invalid_request_error"),
]


async def read_text(client: anthropic.AsyncAnthropic, fault: str, pieces: list[str]) -> None:
    """Stream an answer with `fault`, keeping the text that arrived before it failed."""
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=user(f"[[sim:fault={fault}]]")) as stream:
        async for piece in stream.text_stream:
            pieces.append(piece)


class TestStatusFaults:
    @pytest.mark.parametrize(("fault", "error_class", "status", "error_type"), STATUS_FAULTS)
    async def test_directive(
        self,
        client: anthropic.AsyncAnthropic,
        fault: str,
        error_class: type[anthropic.APIStatusError],
        status: int,
        error_type: str,
    ) -> None:
        with pytest.raises(error_class) as caught:
            await client.messages.create(model=MODEL, max_tokens=16, messages=user(f"Hi [[sim:fault={fault}]]"))

        assert caught.value.status_code == status
        assert caught.value.type == error_type
        assert caught.value.request_id is not None
        assert caught.value.request_id.startswith("req_01")
        assert caught.value.body == {
            "type": "error",
            "error": {"type": error_type, "message": caught.value.api_message},
            "request_id": caught.value.request_id,
        }

    @pytest.mark.parametrize(("fault", "error_class", "status", "error_type"), STATUS_FAULTS)
    async def test_header_and_streaming(
        self,
        client: anthropic.AsyncAnthropic,
        fault: str,
        error_class: type[anthropic.APIStatusError],
        status: int,
        error_type: str,
    ) -> None:
        with pytest.raises(error_class):
            async with client.messages.stream(
                model=MODEL, max_tokens=16, messages=user("Hi"), extra_headers={"x-sim-fault": fault}
            ) as stream:
                await stream.get_final_message()

    async def test_header_wins_over_directive(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.PermissionDeniedError):
            await client.messages.create(
                model=MODEL,
                max_tokens=16,
                messages=user("[[sim:fault=overloaded]]"),
                extra_headers={"x-sim-fault": "permission"},
            )


class TestRateLimit:
    async def test_retry_after_header(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=body(messages=user("[[sim:fault=rate_limit retry_after=7]]")))

        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"

    async def test_retry_after_defaults_to_a_second(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=body(), headers={"x-sim-fault": "rate_limit"})

        assert response.headers["retry-after"] == "1"

    async def test_the_sdk_waits_as_told_before_retrying(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        # Longer than the SDK's own first backoff (at most 0.5 s), so only the header explains the wait.
        retry_after_s = 1.5
        async with sdk(simulator.base_url, max_retries=1) as client, raw_http(simulator.base_url) as http:
            started = time.monotonic()
            with pytest.raises(anthropic.RateLimitError):
                await client.messages.create(
                    model=MODEL, max_tokens=16, messages=user(f"[[sim:fault=rate_limit retry_after={retry_after_s}]]")
                )
            waited = time.monotonic() - started
            seen = await stats(http)

        assert seen["requests"] == 2
        assert seen["last_headers"]["x-stainless-retry-count"] == "1"
        assert waited >= retry_after_s


class TestMidstream:
    async def test_overloaded_event_after_some_text(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/messages", json=body(stream=True, messages=user("[[sim:fault=midstream_overloaded]]"))
        )
        events = parse_sse(response.content)

        assert response.status_code == 200
        assert names(events) == [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "error",
        ]
        assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    async def test_the_sdk_stream_raises(self, client: anthropic.AsyncAnthropic) -> None:
        pieces: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as caught:
            await read_text(client, "midstream_overloaded", pieces)

        assert len(pieces) == 3
        assert caught.value.type == "overloaded_error"

    async def test_without_streaming_it_is_a_529(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.OverloadedError):
            await client.messages.create(
                model=MODEL, max_tokens=64, messages=user("[[sim:fault=midstream_overloaded]]")
            )

    async def test_disconnect_breaks_the_sdk_stream(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        pieces: list[str] = []
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
                await read_text(client, "midstream_disconnect", pieces)
            seen = await stats(http)

        assert len(pieces) == 3
        assert seen["streams_failed"] == 1
        assert seen["streams_open"] == 0

    async def test_disconnect_has_no_clean_end(self, http: httpx.AsyncClient) -> None:
        received: list[bytes] = []

        async def read_raw() -> None:
            async with http.stream(
                "POST", "/v1/messages", json=body(stream=True), headers={"x-sim-fault": "midstream_disconnect"}
            ) as response:
                async for chunk in response.aiter_bytes():
                    received.append(chunk)

        with pytest.raises(httpx.RemoteProtocolError):
            await read_raw()
        received_bytes = b"".join(received)

        assert b"content_block_delta" in received_bytes
        assert b"message_stop" not in received_bytes

    async def test_disconnect_without_streaming_is_a_connection_error(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.APIConnectionError):
            await client.messages.create(
                model=MODEL, max_tokens=64, messages=user("[[sim:fault=midstream_disconnect]]")
            )


class TestHang:
    async def test_the_client_times_out(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url, timeout=0.3) as client, raw_http(simulator.base_url) as http:
            with pytest.raises(anthropic.APITimeoutError):
                await client.messages.create(model=MODEL, max_tokens=16, messages=user("[[sim:fault=hang]]"))
            after = await client.messages.create(model=MODEL, max_tokens=16, messages=user("Hi"))
            seen = await stats(http)

        assert after.stop_reason == "max_tokens"
        assert seen["requests"] == 2

    async def test_a_hanging_stream_never_starts(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.APITimeoutError):
            async with client.with_options(timeout=0.3).messages.stream(
                model=MODEL, max_tokens=16, messages=user("Hi"), extra_headers={"x-sim-fault": "hang"}
            ) as stream:
                await stream.get_final_message()


class TestBadControls:
    @pytest.mark.parametrize(
        "directive",
        ["[[sim:fault=melted]]", "[[sim:speed=3]]", "[[sim:tokens=0]]", "[[sim:tokens=many]]", "[[sim:ttft_ms=-1]]"],
    )
    async def test_are_rejected(self, http: httpx.AsyncClient, directive: str) -> None:
        response = await http.post("/v1/messages", json=body(messages=user(directive)))

        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    async def test_unknown_control_header(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=body(), headers={"x-sim-speed": "3"})

        assert response.status_code == 400
