"""Faults injected while traffic runs against `claude-gateway serve` (Gunicorn, two uvicorn workers), on loopback.

Each test: no request outlives its deadline (`REQUEST_DEADLINE_S`), every failure is a mapped status or an in-band
`error` event (never a hang, never a bare 500), the metrics count what happened, and service comes back by itself.
"""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from tests.faults.conftest import (
    EVENT_DEADLINE_S,
    SimulatorHandle,
    Tally,
    async_wait_for,
    chat,
    chat_stream,
    children,
    client,
    keep_sending,
    one,
    sample,
    scrape,
    wait_for,
)
from tests.server.conftest import ServeFactory, wait_for_workers
from tests.support.servers import RedisServer

WORKERS = 2
# About 1.5 s per stream: long enough to be in flight when the fault strikes.
STREAM = "under load [[sim:tokens=30 tokens_per_s=20]]"
CHAT = "under load [[sim:tokens=5]]"


def traffic(index: int, http: httpx.AsyncClient) -> object:
    return chat_stream(http, STREAM) if index % 2 else chat(http, CHAT)


@pytest.mark.slow
class TestWorkerKilled:
    async def test_gunicorn_replaces_it_and_only_its_requests_fail(self, serve: ServeFactory) -> None:
        server = serve(workers=WORKERS)
        master = server.popen.pid
        workers = children(master)
        assert len(workers) == WORKERS
        tally = Tally()
        stop = asyncio.Event()
        # A new connection per request: a request fails only if the dead worker was serving it.
        async with client(server.url, keepalive=False) as http:
            load = asyncio.create_task(keep_sending(tally, lambda i: traffic(i, http), stop, workers=16))  # type: ignore[arg-type,return-value]
            # Traffic is flowing, streams included, when one worker is killed.
            assert await async_wait_for(lambda: _flowing(tally), timeout_s=EVENT_DEADLINE_S), "no traffic served"
            in_flight_at_kill = tally.started - tally.total
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
            served_before = served(tally)
            # Meanwhile the other worker goes on serving (Gunicorn takes a second or two to start a replacement).
            assert await async_wait_for(lambda: _true(served(tally) > served_before), timeout_s=EVENT_DEADLINE_S), (
                "nothing served after the kill"
            )
            served_meanwhile = served(tally) - served_before
            assert await asyncio.to_thread(wait_for, lambda: len(set(children(master)) - {victim}) == WORKERS, 30), (
                "no replacement worker"
            )
            await asyncio.to_thread(wait_for_workers, server, WORKERS + 1)  # the replacement has started up
            # Traffic goes on through the restored pair before it stops.
            served_at_replacement = served(tally)
            assert await async_wait_for(
                lambda: _true(served(tally) >= served_at_replacement + 32), timeout_s=EVENT_DEADLINE_S
            ), "no traffic served after the replacement"
            stop.set()
            await load
            after = Tally()
            await asyncio.gather(*(one(after, traffic(i, http)) for i in range(40)))  # type: ignore[arg-type]
            metrics = await scrape(server.metrics_url)
        failed = tally.only("200", "stream:done")
        print(
            f"worker killed: {tally.total} requests, {in_flight_at_kill} in flight at the kill, "
            f"{served_meanwhile} served by the other worker just after, failures {failed}"
        )
        assert "hung" not in tally.outcomes
        assert served_meanwhile > 0
        # Only requests the dead worker was serving fail, as broken connections (there is no one left to answer).
        assert sum(failed.values()) <= in_flight_at_kill
        assert all(kind.startswith(("transport:", "stream:truncated")) for kind in failed)
        assert after.outcomes == {"200": 20, "stream:done": 20}
        # The dead worker's live gauges are gone (Gunicorn's child_exit marks it dead): nothing is left streaming.
        assert sample(metrics, "claude_gateway_active_streams") == 0
        assert sample(metrics, "claude_gateway_http_requests_total", route="/chat", status="200") > 0


@pytest.mark.slow
class TestRedisOutage:
    async def test_requests_are_served_through_a_redis_restart(
        self, serve: ServeFactory, redis_url: str, redis_server: RedisServer
    ) -> None:
        server = serve(workers=WORKERS, REDIS_URL=redis_url)
        tally = Tally()
        stop = asyncio.Event()
        async with client(server.url) as http:

            async def ready() -> int:
                return (await http.get("/health/ready")).status_code

            async def ready_but_redis_down() -> bool:
                response = await http.get("/health/ready")
                return response.status_code == 200 and response.json()["redis"] == "down"

            load = asyncio.create_task(keep_sending(tally, lambda i: traffic(i, http), stop, workers=8))  # type: ignore[arg-type,return-value]
            assert await async_wait_for(lambda: _true(served(tally) >= 16), timeout_s=EVENT_DEADLINE_S), (
                "no traffic served"
            )
            redis_server.stop()
            # Until requests have met the outage (their limit checks failed, and were let through) and it is seen
            # (`redis_up`, the minimum over the workers, drops to 0) ...
            assert await async_wait_for(lambda: _outage_seen(server.metrics_url), timeout_s=EVENT_DEADLINE_S), (
                "Redis's outage was never noticed"
            )
            # ... and readiness says so in its body, still 200 (fail-open serves: traffic should keep coming here).
            ready_during = await async_wait_for(ready_but_redis_down, timeout_s=EVENT_DEADLINE_S)
            during = await scrape(server.metrics_url)
            redis_server.start()
            # Readiness and shared limits come back by themselves, while the traffic goes on.
            assert await async_wait_for(lambda: _is(ready, 200), timeout_s=EVENT_DEADLINE_S)
            assert await async_wait_for(lambda: _redis_up(server.metrics_url, 1), timeout_s=EVENT_DEADLINE_S)
            stop.set()
            await load
        print(f"redis restarted: {tally.total} requests, outcomes {dict(tally.outcomes)}")
        # Fail-open (the default): every request served, none held past REDIS_TIMEOUT_S for long.
        assert tally.only("200", "stream:done") == {}
        assert ready_during, "/health/ready did not answer 200 with redis down while Redis was down"
        assert sample(during, "claude_gateway_redis_errors_total", operation="ratelimit") > 0
        assert sample(during, "claude_gateway_redis_up") == 0


async def _redis_up(url: str, expected: int) -> bool:
    """`claude_gateway_redis_up` is the minimum over the workers: 1 once every one of them has reached Redis."""
    return sample(await scrape(url), "claude_gateway_redis_up") == expected


async def _outage_seen(url: str) -> bool:
    metrics = await scrape(url)
    return (
        sample(metrics, "claude_gateway_redis_up") == 0
        and sample(metrics, "claude_gateway_redis_errors_total", operation="ratelimit") > 0
    )


def served(tally: Tally) -> int:
    return tally.outcomes["200"] + tally.outcomes["stream:done"]


async def _true(value: bool) -> bool:
    return value


async def _flowing(tally: Tally) -> bool:
    return served(tally) >= 16 and tally.outcomes["stream:done"] >= 2


async def _is(read: object, expected: int) -> bool:
    try:
        return await read() == expected  # type: ignore[operator,no-any-return]
    except httpx.HTTPError:
        return False


@pytest.mark.slow
class TestUpstreamFaults:
    async def test_overloaded_hanging_and_dropping_upstream(self, serve: ServeFactory) -> None:
        """A quarter of the calls meet a 529, a hang, a drop mid-stream or an overload mid-stream; the rest pass."""
        server = serve(workers=WORKERS, UPSTREAM_TIMEOUT_S="1", UPSTREAM_MAX_RETRIES="0")
        faults = [
            (chat, "[[sim:fault=overloaded]]", "503"),
            (chat, "[[sim:fault=hang]]", "504"),
            (chat_stream, "[[sim:fault=hang]]", "504"),
            (chat_stream, "[[sim:fault=midstream_disconnect tokens=20]]", "stream:error:api_error"),
            (chat_stream, "[[sim:fault=midstream_overloaded tokens=20]]", "stream:error:overloaded_error"),
            # Stalls after its first tokens for longer than the upstream timeout: the read times out mid-stream.
            (chat_stream, "[[sim:tokens=4 tokens_per_s=0.5]]", "stream:error:timeout_error"),
        ]
        tally = Tally()
        expected: dict[str, int] = {}

        def pick(index: int, http: httpx.AsyncClient) -> object:
            if index % 4:
                return traffic(index, http)
            kind, message, outcome = faults[(index // 4) % len(faults)]
            expected[outcome] = expected.get(outcome, 0) + 1
            return kind(http, message)

        async with client(server.url) as http:
            await asyncio.gather(*(one(tally, pick(i, http)) for i in range(240)))  # type: ignore[arg-type]
            metrics = await scrape(server.metrics_url)
            recovered = Tally()
            await asyncio.gather(*(one(recovered, traffic(i, http)) for i in range(20)))  # type: ignore[arg-type]
        print(f"upstream faults: {tally.total} requests, outcomes {dict(tally.outcomes)}")
        assert "hung" not in tally.outcomes
        for outcome, count in expected.items():
            assert tally.outcomes[outcome] == count, (outcome, dict(tally.outcomes))
        assert tally.outcomes["200"] + tally.outcomes["stream:done"] == 180
        assert sample(metrics, "claude_gateway_upstream_requests_total", outcome="overloaded") == (
            expected["503"] + expected["stream:error:overloaded_error"]
        )
        assert sample(metrics, "claude_gateway_upstream_requests_total", outcome="timeout") == (
            expected["504"] + expected["stream:error:timeout_error"]
        )
        assert sample(metrics, "claude_gateway_http_requests_total", route="/chat", status="504") == sum(
            1 for i in range(0, 240, 4) if faults[(i // 4) % len(faults)][:2] == (chat, "[[sim:fault=hang]]")
        )
        assert sample(metrics, "claude_gateway_active_streams") == 0
        assert recovered.outcomes == {"200": 10, "stream:done": 10}

    async def test_the_upstream_dying_mid_stream_and_coming_back(
        self, serve: ServeFactory, own_simulator: SimulatorHandle
    ) -> None:
        server = serve(workers=WORKERS, ANTHROPIC_BASE_URL=own_simulator.url, UPSTREAM_MAX_RETRIES="0")
        tally = Tally()
        async with client(server.url) as http:
            streams = [
                asyncio.create_task(one(tally, chat_stream(http, "[[sim:tokens=200 tokens_per_s=20]]")))
                for _ in range(20)
            ]
            assert await async_wait_for(lambda: _streams_open(own_simulator, 20), timeout_s=10), (
                "the streams did not all start"
            )
            own_simulator.kill()
            await asyncio.gather(*streams)
            down = Tally()
            await asyncio.gather(*(one(down, traffic(i, http)) for i in range(10)))  # type: ignore[arg-type]
            own_simulator.start()
            back = Tally()
            await asyncio.gather(*(one(back, traffic(i, http)) for i in range(20)))  # type: ignore[arg-type]
            metrics = await scrape(server.metrics_url)
        print(f"upstream died: streams {dict(tally.outcomes)}, while down {dict(down.outcomes)}")
        # Cut streams end with an error event (and [DONE]); calls made while it is down are 503 "unreachable".
        assert tally.outcomes == {"stream:error:api_error": 20}
        assert down.outcomes == {"503": 10}
        assert back.outcomes == {"200": 10, "stream:done": 10}
        assert sample(metrics, "claude_gateway_upstream_requests_total", outcome="unreachable") == 10
        assert sample(metrics, "claude_gateway_active_streams") == 0


async def _streams_open(simulator: SimulatorHandle, count: int) -> bool:
    return int((await simulator.stats())["streams_open"]) >= count
