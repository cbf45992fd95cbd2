"""Redis down (killed) or hung (SIGSTOP): bounded calls, the fail mode, metrics, one warning, recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from limits import parse_many

from claude_gateway import errors
from claude_gateway.admission.ratelimit import LimitExceeded, RateLimiter

from .conftest import MakeLimiter
from .support import OUTAGE_PASSWORD, Records, RedisServer, in_thread, sample

T = TypeVar("T")

CLIENT = "billing-service"
REQUESTS = parse_many("100/minute")
TOKENS = parse_many("10000/minute")
TIMEOUT_S = 0.3
# A hung Redis must cost a call at most the timeout; the slack absorbs a loaded 2-core machine, and is
# far below what a hang without a timeout would take (the test's own timeout).
CALL_BOUND_S = TIMEOUT_S + 2.0
RECOVERY_DEADLINE_S = 10.0
TICK_S = 0.01


def redis_up() -> float:
    return sample("claude_gateway_redis_up")


def redis_errors(operation: str = "ratelimit") -> float:
    return sample("claude_gateway_redis_errors_total", {"operation": operation})


async def bounded(call: Awaitable[T]) -> T:
    """Await `call`, asserting it came back within CALL_BOUND_S whatever Redis does."""
    started = time.monotonic()
    try:
        return await call
    finally:
        assert time.monotonic() - started < CALL_BOUND_S


def warnings_about_redis(logs: Records) -> list[str]:
    return [record.getMessage() for record in logs.records if "Redis did not answer" in record.getMessage()]


class Outage:
    """A dedicated redis-server, and how this test breaks it: killed (refused) or hung (SIGSTOP)."""

    def __init__(self, server: RedisServer, mode: str) -> None:
        self.server = server
        self.mode = mode

    def begin(self) -> None:
        if self.mode == "killed":
            self.server.kill()
        else:
            self.server.pause()

    async def end(self) -> None:
        if self.mode == "killed":
            await in_thread(self.server.start)  # the same port, empty
        else:
            self.server.resume()


@pytest.fixture(params=["killed", "hung"])
def outage(request: pytest.FixtureRequest, outage_redis: RedisServer) -> Outage:
    return Outage(outage_redis, request.param)


async def open_limiter(make_limiter: MakeLimiter, server: RedisServer, **overrides: object) -> RateLimiter:
    """A limiter on `server`, with a pooled connection made before any outage."""
    limiter = await make_limiter(server.url, redis_timeout_s=TIMEOUT_S, **overrides)
    await limiter.hit_requests("warm-up", REQUESTS)
    return limiter


class TestFailOpen:
    async def test_requests_are_served_within_the_bound(
        self, make_limiter: MakeLimiter, outage: Outage, ratelimit_logs: Records
    ) -> None:
        limiter = await open_limiter(make_limiter, outage.server, retry_interval_s=0.0)
        errors_before = redis_errors()
        outage.begin()
        for _ in range(3):
            headers = await bounded(limiter.hit_requests(CLIENT, REQUESTS))
            assert headers.as_headers()["X-RateLimit-Limit"] == "100"
        reservation = await bounded(limiter.reserve_tokens(CLIENT, TOKENS, 500))
        await bounded(limiter.settle(reservation, 100))
        assert redis_up() == 0
        assert redis_errors() >= errors_before + 3  # every call tried Redis (no retry interval here)
        assert len(warnings_about_redis(ratelimit_logs)) == 1  # once per outage, not per call
        assert OUTAGE_PASSWORD not in ratelimit_logs.text()
        assert str(outage.server.port) not in ratelimit_logs.text()

    async def test_limits_hold_per_process_meanwhile(self, make_limiter: MakeLimiter, outage: Outage) -> None:
        limiter = await open_limiter(make_limiter, outage.server)
        outage.begin()
        limits = parse_many("2/minute")
        await bounded(limiter.hit_requests(CLIENT, limits))
        await bounded(limiter.hit_requests(CLIENT, limits))
        with pytest.raises(LimitExceeded):
            await bounded(limiter.hit_requests(CLIENT, limits))

    async def test_the_event_loop_keeps_running_while_redis_hangs(
        self, make_limiter: MakeLimiter, outage_redis: RedisServer
    ) -> None:
        limiter = await open_limiter(make_limiter, outage_redis)
        outage_redis.pause()
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(TICK_S)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        await limiter.hit_requests(CLIENT, REQUESTS)  # waits for the timeout, then fails open
        ended = time.monotonic()
        ticking.cancel()
        during = [tick for tick in ticks if started < tick < ended]
        assert ended - started >= TIMEOUT_S * 0.9  # it really waited on the hung server...
        assert len(during) >= 5  # ...while other work went on (a blocked loop would not tick at all)

    async def test_a_hang_costs_one_timeout_per_retry_interval(
        self, make_limiter: MakeLimiter, outage_redis: RedisServer
    ) -> None:
        limiter = await open_limiter(make_limiter, outage_redis, retry_interval_s=60.0)
        outage_redis.pause()
        errors_before = redis_errors()
        started = time.monotonic()
        for _ in range(20):
            await limiter.hit_requests(CLIENT, REQUESTS)
        assert redis_errors() == errors_before + 1  # the first call timed out; the others did not wait
        assert time.monotonic() - started < CALL_BOUND_S

    async def test_limits_resume_when_redis_returns(
        self, make_limiter: MakeLimiter, outage: Outage, ratelimit_logs: Records
    ) -> None:
        limiter = await open_limiter(make_limiter, outage.server, retry_interval_s=0.1)
        outage.begin()
        await bounded(limiter.hit_requests(CLIENT, REQUESTS))
        assert redis_up() == 0
        await outage.end()
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while redis_up() != 1:
            assert time.monotonic() < deadline, "limits did not go back to Redis"
            await asyncio.sleep(0.05)
            await limiter.hit_requests(CLIENT, REQUESTS)
        assert any("answers again" in record.getMessage() for record in ratelimit_logs.records)
        # Shared again: a second limiter (another worker) sees the first one's count.
        other = await make_limiter(outage.server.url, redis_timeout_s=TIMEOUT_S)
        headers = await other.hit_requests(CLIENT, REQUESTS)
        assert int(headers.as_headers()["X-RateLimit-Remaining"]) <= 98  # at least one hit before it
        with outage.server.client() as direct:
            assert direct.get(f"claude-gateway:rl:LIMITER/requests/{CLIENT}/100/1/minute") is not None


class TestFailClosed:
    async def test_requests_are_refused_with_503_within_the_bound(
        self, make_limiter: MakeLimiter, outage: Outage
    ) -> None:
        limiter = await open_limiter(make_limiter, outage.server, rate_limit_fail_mode="closed", retry_interval_s=30.0)
        errors_before = redis_errors()
        outage.begin()
        for _ in range(3):
            with pytest.raises(errors.Overloaded) as refused:
                await bounded(limiter.hit_requests(CLIENT, REQUESTS))
            assert refused.value.status_code == 503
            assert 1 <= int(refused.value.headers["Retry-After"]) <= 30  # when Redis is tried again
        with pytest.raises(errors.Overloaded):
            await bounded(limiter.reserve_tokens(CLIENT, TOKENS, 500))
        assert redis_errors() == errors_before + 1
        assert redis_up() == 0

    async def test_service_resumes_when_redis_returns(self, make_limiter: MakeLimiter, outage: Outage) -> None:
        limiter = await open_limiter(make_limiter, outage.server, rate_limit_fail_mode="closed", retry_interval_s=0.1)
        outage.begin()
        with pytest.raises(errors.Overloaded):
            await bounded(limiter.hit_requests(CLIENT, REQUESTS))
        await outage.end()
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            try:
                await limiter.hit_requests(CLIENT, REQUESTS)
                break
            except errors.Overloaded:
                assert time.monotonic() < deadline, "limits did not go back to Redis"
                await asyncio.sleep(0.05)
        assert redis_up() == 1


class TestPing:
    async def test_ping_follows_redis(self, make_limiter: MakeLimiter, outage: Outage) -> None:
        limiter = await open_limiter(make_limiter, outage.server)
        assert await limiter.ping()
        assert redis_up() == 1
        errors_before = redis_errors("health")
        outage.begin()
        assert not await bounded(limiter.ping())
        assert redis_errors("health") == errors_before + 1
        assert redis_up() == 0
        await outage.end()
        assert await bounded(limiter.ping())
        assert redis_up() == 1
        await limiter.hit_requests(CLIENT, REQUESTS)  # a good ping closes the circuit at once

    async def test_memory_is_always_ready(self, make_limiter: MakeLimiter) -> None:
        assert await (await make_limiter("memory")).ping()


async def test_settle_never_raises_while_redis_is_away(make_limiter: MakeLimiter, outage: Outage) -> None:
    limiter = await open_limiter(make_limiter, outage.server, retry_interval_s=0.0)
    reservation = await limiter.reserve_tokens(CLIENT, TOKENS, 5000)
    outage.begin()
    await bounded(limiter.settle(reservation, 10))
    assert reservation.settled
