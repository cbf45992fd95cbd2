"""`/_sim/stats` and `/_sim/reset`: what the gateway's tests rely on to see what reached "Anthropic"."""

from __future__ import annotations

import asyncio
import contextlib

import anthropic
import httpx

from .helpers import MODEL, MakeSimulator, body, raw_http, sdk, stats, user, wait_for_stats

SLOW_STREAM = "Go [[sim:tokens=2000 tokens_per_s=20]]"


class TestCounters:
    async def test_start_at_zero(self, make_simulator: MakeSimulator) -> None:
        async with raw_http(make_simulator().base_url) as http:
            seen = await stats(http)

        assert seen == {
            "requests": 0,
            "streams_open": 0,
            "streams_started": 0,
            "streams_completed": 0,
            "streams_cancelled": 0,
            "streams_failed": 0,
            "responses": {},
            "last_headers": {},
            "last_request": None,
            "last_path": None,
        }

    async def test_count_requests_and_streams(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            await client.messages.create(model=MODEL, max_tokens=4, messages=user("one"))
            async with client.messages.stream(model=MODEL, max_tokens=4, messages=user("two")) as stream:
                await stream.get_final_message()
            await client.messages.count_tokens(model=MODEL, messages=user("three"))
            await http.post("/v1/messages", json=body(max_tokens=0))
            seen = await stats(http)

        assert seen["requests"] == 4
        assert seen["streams_started"] == 1
        assert seen["streams_completed"] == 1
        assert seen["streams_open"] == 0
        assert seen["responses"] == {"200": 3, "400": 1}
        assert seen["last_request"] == body(max_tokens=0)

    async def test_reset_zeroes_them(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            await client.messages.create(model=MODEL, max_tokens=4, messages=user("one"))
            reset = await http.post("/_sim/reset")
            seen = await stats(http)

        assert reset.status_code == 200
        assert seen["requests"] == 0
        assert seen["responses"] == {}
        assert seen["last_headers"] == {}


class TestOpenAndCancelled:
    async def test_an_open_stream_is_counted_while_it_runs(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            async with client.messages.stream(model=MODEL, max_tokens=4096, messages=user(SLOW_STREAM)) as stream:
                async for _ in stream.text_stream:
                    break
                during = await stats(http)
            after = await wait_for_stats(http, streams_open=0, streams_cancelled=1)

        assert during["streams_open"] == 1
        assert during["streams_started"] == 1
        assert after["streams_open"] == 0
        assert after["streams_cancelled"] == 1
        assert after["streams_completed"] == 0

    async def test_a_client_leaving_mid_stream_is_noticed_promptly(self, make_simulator: MakeSimulator) -> None:
        """The connection closes between two tokens (50 ms apart here): no write is needed to notice."""
        simulator = make_simulator()
        async with raw_http(simulator.base_url) as http:
            async with (
                httpx.AsyncClient(base_url=simulator.base_url) as leaving,
                leaving.stream(
                    "POST",
                    "/v1/messages",
                    json=body(stream=True, max_tokens=4096, messages=user(SLOW_STREAM)),
                    headers=http.headers,
                ) as response,
            ):
                async for chunk in response.aiter_bytes():
                    if b"content_block_delta" in chunk:
                        break
            after = await wait_for_stats(http, streams_open=0, streams_cancelled=1)

        assert (after["streams_open"], after["streams_cancelled"]) == (0, 1)

    async def test_many_streams_cancelled_together(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        count = 40
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:

            async def read_a_little() -> None:
                async with client.messages.stream(model=MODEL, max_tokens=4096, messages=user(SLOW_STREAM)) as stream:
                    async for _ in stream.text_stream:
                        break

            tasks = [asyncio.create_task(read_a_little()) for _ in range(count)]
            await asyncio.gather(*tasks)
            after = await wait_for_stats(http, streams_open=0, streams_cancelled=count)

        assert after["streams_started"] == count
        assert after["streams_cancelled"] == count
        assert after["streams_open"] == 0

    async def test_a_cancelled_non_streaming_request_is_not_a_stream(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator(ttft_ms=5000.0)
        async with sdk(simulator.base_url, timeout=0.2) as client, raw_http(simulator.base_url) as http:
            with contextlib.suppress(anthropic.APITimeoutError):
                await client.messages.create(model=MODEL, max_tokens=4, messages=user("slow"))
            seen = await stats(http)

        assert seen["requests"] == 1
        assert seen["streams_started"] == 0
