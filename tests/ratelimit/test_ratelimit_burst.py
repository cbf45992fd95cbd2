"""Bursts: concurrent hits from many connection pools and from several OS processes admit exactly the limit."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from limits import parse_many

from claude_gateway.admission.ratelimit import LimitExceeded, RateLimiter

from .conftest import MakeLimiter
from .support import TESTS_DIR, sample

CLIENT = "burst-client"
WORKER = TESTS_DIR / "burst_worker.py"
# Starting a Python process that imports the gateway takes a second or two on a loaded 2-core machine.
PROCESS_READY_TIMEOUT_S = 60.0
# Atomicity is under test, not latency: a generous timeout so that a slow moment never fails a call open.
BURST_REDIS_TIMEOUT_S = 10.0


async def burst(limiters: list[RateLimiter], tasks: int, **call: Any) -> int:
    """`tasks` concurrent calls spread over `limiters`; how many were admitted."""

    async def one(limiter: RateLimiter) -> bool:
        try:
            await limiter.acquire(CLIENT, **call)
        except LimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(one(limiters[index % len(limiters)]) for index in range(tasks)))
    return sum(results)


async def test_a_burst_over_several_pools_admits_exactly_the_limit(make_limiter: MakeLimiter, redis_url: str) -> None:
    # Five limiters with five connection pools stand for five workers of a pod.
    limiters = [await make_limiter(redis_url, redis_timeout_s=BURST_REDIS_TIMEOUT_S) for _ in range(5)]
    before = sample("claude_gateway_rate_limited_total", {"client": CLIENT, "limit": "requests"})
    admitted = await burst(limiters, 200, requests=parse_many("57/minute;1000/hour"))
    assert admitted == 57
    assert sample("claude_gateway_rate_limited_total", {"client": CLIENT, "limit": "requests"}) == before + 143


async def test_a_token_burst_over_several_pools_fills_the_budget_exactly(
    make_limiter: MakeLimiter, redis_url: str
) -> None:
    limiters = [await make_limiter(redis_url, redis_timeout_s=BURST_REDIS_TIMEOUT_S) for _ in range(4)]
    admitted = await burst(limiters, 120, tokens=parse_many("1000/minute"), cost=37)
    assert admitted == 1000 // 37


async def test_a_burst_in_memory_admits_exactly_the_limit(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter("memory")
    assert await burst([limiter], 200, requests=parse_many("57/minute")) == 57
    assert await burst([limiter], 120, tokens=parse_many("1000/minute"), cost=37) == 1000 // 37


async def run_workers(redis_url: str, processes: int, *args: str) -> list[dict[str, Any]]:
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            redis_url,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), PROCESS_READY_TIMEOUT_S)
            assert line.strip() == b"ready", line
        for worker in workers:  # every process is connected and waiting: start them together
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        results = []
        for worker in workers:
            out, _ = await asyncio.wait_for(worker.communicate(), PROCESS_READY_TIMEOUT_S)
            assert worker.returncode == 0
            results.append(json.loads(out))
        return results
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()


@pytest.mark.slow
async def test_a_burst_from_several_processes_admits_exactly_the_limit(redis_url: str) -> None:
    results = await run_workers(redis_url, 4, "requests", "97/minute", "60", "0")
    assert all(result["redis_up"] for result in results)  # no process failed open to local limits
    assert sum(result["admitted"] for result in results) == 97


@pytest.mark.slow
async def test_token_reservations_from_several_processes_fill_the_budget_exactly(redis_url: str) -> None:
    results = await run_workers(redis_url, 4, "tokens", "1000/minute", "30", "37")
    assert all(result["redis_up"] for result in results)
    assert sum(result["admitted"] for result in results) == 1000 // 37
