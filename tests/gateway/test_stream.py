"""`POST /chat/stream`: events as they come, the done event, in-band errors, and clients that leave."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from claude_gateway.server.http_protocol import GatewayHttpProtocol
from tests.conftest import Gateway
from tests.gateway.sse_client import collect, data_events
from tests.support.access_log import access_lines
from tests.support.servers import Process

# How long a left client's upstream stream may go on: a bound for "closed, not relayed to nobody" (the streams in
# these tests would run 40 s), generous enough for a machine whose every core is busy. Not a speed measurement.
UPSTREAM_CLOSE_DEADLINE_S = 15.0
EVENT_DEADLINE_S = 15.0


async def sim_stats(simulator: Process) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        return (await http.get("/_sim/stats")).json()  # type: ignore[no-any-return]


class TestChatStream:
    async def test_streams_text_then_usage_then_done(self, gateway: Gateway) -> None:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as http,
            http.stream(
                "POST", "/chat/stream", json={"message": "hi [[sim:tokens=12]]"}, headers=gateway.headers()
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            events = await collect(response)
        texts = [event["text"] for event in events[:-2]]
        assert len(texts) == 12
        assert all(isinstance(text, str) and text for text in texts)
        done = events[-2]
        assert done["done"] is True
        assert done["usage"]["output"] == 12
        assert done["usage"]["input"] > 0
        assert events[-1] == "[DONE]"

    async def test_first_event_arrives_while_upstream_still_generates(
        self, gateway: Gateway, simulator: Process
    ) -> None:
        body = {"message": "long one [[sim:tokens=40 tokens_per_s=20]]"}
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            async with http.stream("POST", "/chat/stream", json=body, headers=gateway.headers()) as response:
                events = data_events(response)
                first = await anext(events)
                stats = await sim_stats(simulator)
                assert "text" in first
                # The simulator has not finished this stream: nothing between it and us held the first token back.
                assert stats["streams_open"] >= 1
                rest = [event async for event in events]
        assert rest[-1] == "[DONE]"
        assert rest[-2]["usage"]["output"] == 40

    async def test_upstream_error_midstream_becomes_an_error_event(self, gateway: Gateway) -> None:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as http,
            http.stream(
                "POST",
                "/chat/stream",
                json={"message": "[[sim:fault=midstream_overloaded tokens=30]]"},
                headers=gateway.headers(),
            ) as response,
        ):
            assert response.status_code == 200
            events = await collect(response)
        assert any("text" in event for event in events[:-2])
        assert events[-2] == {"error": {"type": "overloaded_error", "message": "Claude is overloaded. Try again."}}
        assert events[-1] == "[DONE]"

    async def test_upstream_dying_midstream_becomes_an_error_event(self, gateway: Gateway) -> None:
        async with (
            httpx.AsyncClient(base_url=gateway.url) as http,
            http.stream(
                "POST",
                "/chat/stream",
                json={"message": "[[sim:fault=midstream_disconnect tokens=30]]"},
                headers=gateway.headers(),
            ) as response,
        ):
            events = await collect(response)
        assert "error" in events[-2]
        assert events[-2]["error"]["type"] == "api_error"
        assert events[-1] == "[DONE]"

    async def test_error_before_first_byte_is_an_http_error(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat/stream", json={"message": "[[sim:fault=overloaded]]"}, headers=gateway.headers()
            )
        assert response.status_code == 503
        assert response.json() == {"detail": "Claude is overloaded. Try again."}


@pytest.fixture(params=[GatewayHttpProtocol, "httptools"], ids=["told-by-the-protocol", "watching-receive"])
def leaving_gateway(request: pytest.FixtureRequest, make_gateway: Callable[..., Gateway]) -> Gateway:
    """Served by the gateway's protocol, which tells a stream its client left; and by uvicorn's own, where the
    stream learns it from `receive()`."""
    return make_gateway(http=request.param)


class TestClientDisconnect:
    async def test_upstream_stream_closes_when_the_client_leaves(
        self, leaving_gateway: Gateway, simulator: Process
    ) -> None:
        gateway = leaving_gateway
        before = await sim_stats(simulator)
        body = {"message": "[[sim:tokens=2000 tokens_per_s=50]]"}  # 40 s if nobody stopped it
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            async with (
                http.stream("POST", "/chat/stream", json=body, headers=gateway.headers()) as response,
                contextlib.aclosing(data_events(response)) as events,
            ):
                await anext(events)
                await anext(events)
        left_at = time.monotonic()
        deadline = left_at + UPSTREAM_CLOSE_DEADLINE_S
        while True:
            stats = await sim_stats(simulator)
            if stats["streams_cancelled"] > before["streams_cancelled"]:
                break
            assert time.monotonic() < deadline, f"upstream stream still open after the client left: {stats}"
            await asyncio.sleep(0.02)

    @pytest.mark.parametrize(
        "http", [GatewayHttpProtocol, "httptools"], ids=["told-by-the-protocol", "watching-receive"]
    )
    async def test_a_client_gone_while_its_stream_waited_for_a_slot_is_noticed(
        self, http: type[GatewayHttpProtocol] | str, make_gateway: Callable[..., Gateway], simulator: Process
    ) -> None:
        """The client leaves before its stream began (it waited for the only upstream slot): once the stream gets
        the slot, it must close its upstream stream at once, not relay a 40 s answer to nobody."""
        gateway = make_gateway(http=http, max_inflight_upstream=1, backpressure_wait_s=60)
        before = (await sim_stats(simulator))["streams_cancelled"]
        long_stream = {"message": "[[sim:tokens=2000 tokens_per_s=50]]"}  # 40 s if nobody stopped it
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=60) as client:
            async with client.stream("POST", "/chat/stream", json=long_stream) as holder:
                holding = data_events(holder)  # kept: a generator collected closes its stream
                await anext(holding)  # its stream has begun: it holds the only slot
                waiter = asyncio.create_task(client.post("/chat/stream", json=long_stream))
                # The waiter's request is being served (a second request task in the server) ...
                await _wait_until(lambda: len(gateway.server.server.server_state.tasks) >= 2, "no second request")
                waiter.cancel()  # ... and its client leaves while it waits for the slot: its connection closes
                with pytest.raises(asyncio.CancelledError):
                    await waiter
            # The holder leaves too, freeing the slot: both upstream streams must be closed, the waiter's as soon as
            # it begins, instead of relaying a 40 s answer to nobody.
        deadline = time.monotonic() + UPSTREAM_CLOSE_DEADLINE_S
        while (await sim_stats(simulator))["streams_cancelled"] < before + 2:
            assert time.monotonic() < deadline, "the stream of a client already gone is still being relayed"
            await asyncio.sleep(0.02)

    async def test_disconnect_is_counted_and_logged_with_usage_so_far(
        self, leaving_gateway: Gateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        gateway = leaving_gateway
        before = REGISTRY.get_sample_value("claude_gateway_client_disconnects_total", {"route": "/chat/stream"}) or 0
        body = {"message": "[[sim:tokens=2000 tokens_per_s=100]]"}
        with caplog.at_level(logging.INFO, logger="claude_gateway.access"):
            async with (
                httpx.AsyncClient(base_url=gateway.url) as http,
                http.stream("POST", "/chat/stream", json=body, headers=gateway.headers()) as response,
                contextlib.aclosing(data_events(response)) as events,
            ):
                for _ in range(3):
                    await anext(events)
            (record,) = await access_lines(caplog, path="/chat/stream")
        after = REGISTRY.get_sample_value("claude_gateway_client_disconnects_total", {"route": "/chat/stream"})
        assert after == before + 1
        assert record.disconnected is True  # type: ignore[attr-defined]
        assert record.output_tokens >= 3  # type: ignore[attr-defined]
        assert record.input_tokens > 0  # type: ignore[attr-defined]


async def _wait_until(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + EVENT_DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.01)
