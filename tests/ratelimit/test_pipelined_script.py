"""`PipelinedScript`: concurrent admissions share round trips, yet each runs alone in a real Redis and gets its own
reply or error; a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from claude_gateway.ratelimit.windows import PipelinedScript

# Adds ARGV[1] to KEYS[1] and returns the new value: order and atomicity are visible in the results.
INCRBY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def reads_processed(redis: Redis) -> int:
    """How many times the server has read from its clients' sockets: one per round trip."""
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_concurrent_calls_share_round_trips_and_each_gets_its_reply(redis: Redis, redis_url: str) -> None:
    calls = 200
    scripted = Redis.from_url(redis_url)
    script = PipelinedScript(scripted, INCRBY)
    await script(["warm"], [1])  # connected, and the script loaded
    before = await reads_processed(redis)
    replies = await asyncio.gather(*(script(["counter"], [1]) for _ in range(calls)))
    round_trips = await reads_processed(redis) - before - 1  # less the INFO that read `before`
    await scripted.aclose()
    assert sorted(replies) == list(range(1, calls + 1))  # each call ran once, alone
    assert int(await redis.get("counter") or 0) == calls
    # redis-py sends one call at a time per connection, and its pool lends few: a round trip per call, 200.
    assert round_trips <= 5, f"{round_trips} round trips for {calls} concurrent calls"


async def test_an_error_reaches_only_its_own_caller(redis: Redis, redis_url: str) -> None:
    await redis.hset("not-a-counter", "field", "1")  # type: ignore[misc]  # redis-py's stubs: sync or async
    scripted = Redis.from_url(redis_url)
    script = PipelinedScript(scripted, INCRBY)
    results = await asyncio.gather(
        script(["a"], [1]), script(["not-a-counter"], [1]), script(["b"], [2]), return_exceptions=True
    )
    await scripted.aclose()
    assert results[0] == 1
    assert isinstance(results[1], ResponseError)
    assert results[2] == 2


async def test_a_script_redis_forgot_is_loaded_again(redis: Redis, redis_url: str) -> None:
    scripted = Redis.from_url(redis_url)
    script = PipelinedScript(scripted, INCRBY)
    assert await script(["c"], [5]) == 5
    await redis.script_flush()
    assert list(await asyncio.gather(script(["c"], [1]), script(["c"], [1]))) == [6, 7]
    await scripted.aclose()


async def test_a_call_whose_caller_gave_up_before_it_was_sent_is_not_sent(redis: Redis, redis_url: str) -> None:
    """A caller that timed out will never settle what its call reserves: the call must not run at all."""
    scripted = Redis.from_url(redis_url)
    script = PipelinedScript(scripted, INCRBY)
    calls = [asyncio.ensure_future(script(["d"], [1])) for _ in range(3)]
    await asyncio.sleep(0)  # the three are queued; the batch goes out on the next turn of the loop
    calls[1].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    await scripted.aclose()
    assert isinstance(results[1], asyncio.CancelledError)
    assert sorted(result for result in results if isinstance(result, int)) == [1, 2]
    assert int(await redis.get("d") or 0) == 2
