"""Backpressure and upstream retries, for real: slow simulator streams fill the upstream slots; 429s and 529s are
retried by the SDK within its budget, counted at the simulator, then mapped.

Slots: `MAX_INFLIGHT_UPSTREAM` calls per process; past it a request waits `BACKPRESSURE_WAIT_S`, then gets 503 with
`Retry-After` without reaching Anthropic. Retries: `UPSTREAM_MAX_RETRIES` more attempts per call, never more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anthropic
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import CLIENT_KEY, Gateway
from tests.faults.conftest import stream_outcome
from tests.gateway.sse_client import data_events
from tests.gateway.test_stream import sim_stats
from tests.support.servers import Process

SLOTS = 4
WAIT_S = 0.5
# Streams long enough to hold their slot through the test (they are cancelled at its end).
LONG_STREAM = "[[sim:tokens=400 tokens_per_s=40]]"
MakeGateway = Callable[..., Gateway]


def rejected(route: str) -> float:
    return REGISTRY.get_sample_value("claude_gateway_backpressure_rejected_total", {"route": route}) or 0.0


def inflight() -> float:
    return REGISTRY.get_sample_value("claude_gateway_upstream_inflight") or 0.0


async def settled(read: Callable[[], float], expected: float, timeout_s: float = 5.0) -> float:
    """Streams are accounted just after their last byte: wait (briefly) for a value to reach `expected`."""
    deadline = time.monotonic() + timeout_s
    while read() != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return read()


async def hold_slots(http: httpx.AsyncClient, count: int) -> tuple[list[asyncio.Task[None]], list[asyncio.Event]]:
    """`count` streams that have each received a first event (so each holds a slot), kept open until cancelled."""
    started = [asyncio.Event() for _ in range(count)]

    async def hold(flag: asyncio.Event) -> None:
        async with http.stream("POST", "/chat/stream", json={"message": LONG_STREAM}) as response:
            assert response.status_code == 200
            async for _ in data_events(response):
                flag.set()

    tasks = [asyncio.create_task(hold(flag)) for flag in started]
    await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in started)), 10)
    return tasks, started


async def release(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class TestSlots:
    async def test_full_slots_mean_503_with_retry_after_and_no_upstream_call(
        self, make_gateway: MakeGateway, simulator: Process
    ) -> None:
        gateway = make_gateway(max_inflight_upstream=SLOTS, backpressure_wait_s=WAIT_S)
        inflight_before = inflight()
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=30) as http:
            holders, _ = await hold_slots(http, SLOTS)
            try:
                before = {route: rejected(route) for route in ("/chat", "/chat/stream", "/v1/messages")}
                calls_before = (await sim_stats(simulator))["requests"]
                started = time.monotonic()
                chat, stream, messages = await asyncio.gather(
                    http.post("/chat", json={"message": "hi"}),
                    http.post("/chat/stream", json={"message": "hi"}),
                    http.post(
                        "/v1/messages",
                        json={
                            "model": "claude-sonnet-4-6",
                            "max_tokens": 8,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    ),
                )
                waited = time.monotonic() - started
                calls_after = (await sim_stats(simulator))["requests"]
            finally:
                await release(holders)
        for response in (chat, stream, messages):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        assert chat.json() == {"detail": "The gateway is busy. Try again shortly."}
        assert stream.headers["content-type"].startswith("application/json")
        assert messages.json()["error"]["type"] == "overloaded_error"
        # They waited for a slot (the set time), then were refused without reaching Anthropic.
        assert waited >= WAIT_S
        assert calls_after == calls_before
        for route, count in before.items():
            assert rejected(route) == count + 1
        # A refused request never became an upstream call: nothing of it stays in flight.
        assert await settled(inflight, inflight_before) == inflight_before

    async def test_a_slot_freed_within_the_wait_is_taken(self, make_gateway: MakeGateway) -> None:
        gateway = make_gateway(max_inflight_upstream=SLOTS, backpressure_wait_s=10)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=30) as http:
            holders, _ = await hold_slots(http, SLOTS)
            try:
                waiting = asyncio.create_task(http.post("/chat", json={"message": "patient"}))
                await asyncio.sleep(0.3)
                assert not waiting.done()
                holders[0].cancel()
                answer = await asyncio.wait_for(waiting, 10)
            finally:
                await release(holders)
        assert answer.status_code == 200

    async def test_slots_come_back_whatever_happened_to_their_calls(self, make_gateway: MakeGateway) -> None:
        """Completed, failed, cancelled mid-stream and refused calls all give their slot back."""
        gateway = make_gateway(max_inflight_upstream=SLOTS, backpressure_wait_s=WAIT_S)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=30) as http:
            for _ in range(3):
                holders, _ = await hold_slots(http, SLOTS)
                refused = await http.post("/chat", json={"message": "hi"})
                assert refused.status_code == 503
                await release(holders)
                answers = await asyncio.gather(
                    *(http.post("/chat", json={"message": "[[sim:fault=overloaded]]"}) for _ in range(SLOTS))
                )
                streams = await asyncio.gather(
                    *(
                        stream_outcome(http, "/chat/stream", {"message": "[[sim:fault=midstream_disconnect]]"})
                        for _ in range(SLOTS)
                    )
                )
                assert [answer.status_code for answer in answers] == [503] * SLOTS
                assert streams == ["stream:error:api_error"] * SLOTS
            # Every slot is free again: SLOTS streams at once are all admitted.
            holders, _ = await hold_slots(http, SLOTS)
            await release(holders)
        assert await settled(inflight, 0) == 0


class TestUpstreamRetries:
    async def test_529_and_429_are_retried_within_the_budget_then_mapped(
        self, make_gateway: MakeGateway, simulator: Process
    ) -> None:
        retries = 2
        gateway = make_gateway(upstream_max_retries=retries)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=60) as http:
            for message, status in (
                ("[[sim:fault=overloaded]]", 503),
                ("[[sim:fault=rate_limit retry_after=0]]", 429),
            ):
                before = (await sim_stats(simulator))["requests"]
                response = await http.post("/chat", json={"message": message})
                after = (await sim_stats(simulator))["requests"]
                assert response.status_code == status
                assert after - before == 1 + retries, message

    async def test_no_retry_storm_under_load(self, make_gateway: MakeGateway, simulator: Process) -> None:
        """Forty clients meeting an overloaded upstream at once cost exactly forty times (1 + retries) calls."""
        retries, clients = 2, 40
        gateway = make_gateway(upstream_max_retries=retries)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(), timeout=60) as http:
            before = (await sim_stats(simulator))["requests"]
            answers = await asyncio.gather(
                *(http.post("/chat", json={"message": "[[sim:fault=overloaded]]"}) for _ in range(clients))
            )
            after = (await sim_stats(simulator))["requests"]
        assert [answer.status_code for answer in answers] == [503] * clients
        assert after - before == clients * (1 + retries)

    async def test_an_sdk_client_adds_its_own_retries_on_top(
        self, make_gateway: MakeGateway, simulator: Process
    ) -> None:
        """What an official SDK with its default retries costs upstream when Claude is overloaded: its attempts
        times the gateway's. Measured and bounded here; `x-should-retry` is how the gateway could say no."""
        gateway = make_gateway(upstream_max_retries=1)
        sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=1)
        before = (await sim_stats(simulator))["requests"]
        try:
            with pytest.raises(anthropic.APIStatusError) as raised:
                await sdk.messages.create(
                    model="claude-sonnet-4-6",
                    max_tokens=8,
                    messages=[{"role": "user", "content": "[[sim:fault=overloaded]]"}],
                )
        finally:
            await sdk.close()
        assert raised.value.status_code == 529  # Anthropic's overloaded, relayed as it came
        calls = (await sim_stats(simulator))["requests"] - before
        assert calls <= (1 + 1) * (1 + 1)
