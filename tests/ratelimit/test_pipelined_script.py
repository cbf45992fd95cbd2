"""`ScriptPipeline`: concurrent calls of its scripts share round trips, yet each runs alone in a real Redis and gets its
own reply or error; a script Redis forgot is loaded again; `sent()` lets a read see every call made before it; closing
drains what is queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from limits import parse_many
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from claude_gateway.admission.ratelimit import window_key
from claude_gateway.admission.ratelimit.script_pipeline import ScriptPipeline

from .conftest import MakeLimiter

# Adds ARGV[1] to KEYS[1] and returns the new value: order and atomicity are visible in the results.
INCRBY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
# Doubles KEYS[1] (ARGV unused): with INCRBY, the results tell the order in which calls ran.
DOUBLE = "local value = tonumber(redis.call('GET', KEYS[1]) or '0') * 2 redis.call('SET', KEYS[1], value) return value"


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
    script = ScriptPipeline(scripted).script(INCRBY)
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
    script = ScriptPipeline(scripted).script(INCRBY)
    results = await asyncio.gather(
        script(["a"], [1]), script(["not-a-counter"], [1]), script(["b"], [2]), return_exceptions=True
    )
    await scripted.aclose()
    assert results[0] == 1
    assert isinstance(results[1], ResponseError)
    assert results[2] == 2


async def test_a_script_redis_forgot_is_loaded_again(redis: Redis, redis_url: str) -> None:
    scripted = Redis.from_url(redis_url)
    script = ScriptPipeline(scripted).script(INCRBY)
    assert await script(["c"], [5]) == 5
    await redis.script_flush()
    assert list(await asyncio.gather(script(["c"], [1]), script(["c"], [1]))) == [6, 7]
    await scripted.aclose()


async def test_a_call_whose_caller_gave_up_before_it_was_sent_is_not_sent(redis: Redis, redis_url: str) -> None:
    """A caller that timed out will never settle what its call reserves: the call must not run at all."""
    scripted = Redis.from_url(redis_url)
    script = ScriptPipeline(scripted).script(INCRBY)
    calls = [asyncio.ensure_future(script(["d"], [1])) for _ in range(3)]
    await asyncio.sleep(0)  # the three are queued; the batch goes out on the next turn of the loop
    calls[1].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    await scripted.aclose()
    assert isinstance(results[1], asyncio.CancelledError)
    assert sorted(result for result in results if isinstance(result, int)) == [1, 2]
    assert int(await redis.get("d") or 0) == 2


async def test_calls_of_several_scripts_share_a_batch_in_the_order_made(redis: Redis, redis_url: str) -> None:
    scripted = Redis.from_url(redis_url)
    pipeline = ScriptPipeline(scripted)
    add, double = pipeline.script(INCRBY), pipeline.script(DOUBLE)
    await asyncio.gather(add(["warm"], [1]), double(["warm"], [0]))  # connected, both scripts loaded
    before = await reads_processed(redis)
    calls = 60  # the value stays below 2**53: Lua's numbers are doubles
    replies = await asyncio.gather(*((add if i % 2 == 0 else double)(["e"], [1]) for i in range(calls)))
    round_trips = await reads_processed(redis) - before - 1
    await scripted.aclose()
    expected, value = [], 0
    for i in range(calls):  # +1, *2, +1, *2, ...: any other order gives other values
        value = value + 1 if i % 2 == 0 else value * 2
        expected.append(value)
    assert replies == expected
    assert round_trips <= 5, f"{round_trips} round trips for {calls} concurrent calls"


async def test_after_noscript_only_the_calls_that_got_it_run_again(redis: Redis, redis_url: str) -> None:
    """Of a batch of calls of two scripts, Redis knows one script: the other's calls are sent again, once each."""
    scripted = Redis.from_url(redis_url)
    pipeline = ScriptPipeline(scripted)
    add, double = pipeline.script(INCRBY), pipeline.script(DOUBLE)
    await add(["f"], [1])  # loaded (and `double` never was)
    await redis.set("g", 3)
    replies = await asyncio.gather(add(["f"], [1]), double(["g"], [0]), add(["f"], [1]))
    await scripted.aclose()
    assert list(replies) == [2, 6, 3]  # each ran once: `double` after NOSCRIPT, the others not again
    assert int(await redis.get("f") or 0) == 3
    assert int(await redis.get("g") or 0) == 6


async def test_drain_waits_for_calls_nobody_awaits(redis: Redis, redis_url: str) -> None:
    scripted = Redis.from_url(redis_url)
    pipeline = ScriptPipeline(scripted)
    add = pipeline.script(INCRBY)
    submitted = [add.submit(["h"], [1]) for _ in range(50)]
    await pipeline.drain()
    await scripted.aclose()
    assert all(reply.done() for reply in submitted)
    assert int(await redis.get("h") or 0) == 50


async def test_sent_lets_a_read_on_another_connection_see_every_call_made_before_it(
    redis: Redis, redis_url: str
) -> None:
    """A call nobody awaits (a whole answer's settlement, made as the answer goes out), then a read of what it writes
    on another connection (the usage endpoint's): after `sent()` the read sees the call, both the call in flight and
    the one queued behind it. Without it the read goes out first: the batch leaves on the next turn of the loop."""
    scripted = Redis.from_url(redis_url)
    pipeline = ScriptPipeline(scripted)
    add = pipeline.script(INCRBY)
    await asyncio.gather(add(["warm"], [1]), redis.ping())  # both connected, and the script loaded
    add.submit(["i"], [1])
    assert int(await redis.get("i") or 0) == 0  # the read overtook the call made before it
    await pipeline.sent()
    assert int(await redis.get("i") or 0) == 1
    add.submit(["j"], [1])
    await asyncio.sleep(0)  # that batch is in flight: the next call queues behind it
    add.submit(["j"], [2])
    await pipeline.sent()
    assert int(await redis.get("j") or 0) == 3
    await pipeline.sent()  # nothing under way: returns at once
    await scripted.aclose()


async def test_concurrent_settlements_share_round_trips(
    make_limiter: MakeLimiter, redis: Redis, redis_url: str
) -> None:
    """The limiter's settlements go through the pipeline as its admissions do: 200 answers ending together are
    settled in a few round trips, each refund in its own client's window."""
    limiter = await make_limiter(redis_url)
    limits = parse_many("1000000/minute")
    clients, calls = 5, 200
    warm_up = await limiter.reserve_tokens("warm-up", limits, 900)
    await limiter.settle(warm_up, 7)  # connected, and the settlement script loaded
    reservations = [await limiter.reserve_tokens(f"client-{i % clients}", limits, 900) for i in range(calls)]
    before = await reads_processed(redis)
    await asyncio.gather(*(limiter.settle(reservation, 7) for reservation in reservations))
    round_trips = await reads_processed(redis) - before - 1
    counts = [int(await redis.get(window_key("tokens", f"client-{i}", limits[0])) or 0) for i in range(clients)]
    assert counts == [calls // clients * 7] * clients
    assert round_trips <= 5, f"{round_trips} round trips for {calls} concurrent settlements"
