"""The in-progress lease on a real Redis: taken over from ARQ's mark, renewed only while it is ours, never created again.

The races the lease must lose gracefully are set up by writing the mark as another worker (or ARQ) would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from claude_gateway.jobs.arq_queue import connect
from claude_gateway.jobs.constants import IN_PROGRESS_LEASE_S
from claude_gateway.jobs.in_progress import ARQ_IN_PROGRESS_VALUE, InProgressLeases, in_progress_key
from claude_gateway.jobs.keys import job_id
from claude_gateway.settings import load_settings
from tests.support.servers import RedisServer

from .support import MakeQueue, MakeSettings, Sim, Workers, wait_for_outcome

JOB = "0123456789abcdef-job"
# ARQ's own mark: job_timeout + 10 s at the defaults.
ARQ_MARK_MS = 130_000
LEASE_MS = int(IN_PROGRESS_LEASE_S * 1000)


async def mark(redis: ArqRedis) -> tuple[str | None, int]:
    value = await redis.get(in_progress_key(JOB))
    return (value.decode() if value is not None else None), int(await redis.pttl(in_progress_key(JOB)))


async def test_takes_over_arqs_mark_as_a_short_lease(redis: ArqRedis) -> None:
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    await leases.started(JOB)
    holder, ttl = await mark(redis)
    assert holder == "pod-a:1:aaaa"
    assert 0 < ttl <= LEASE_MS
    assert leases.jobs == {JOB}


async def test_renewal_keeps_the_lease_of_a_live_job(redis: ArqRedis) -> None:
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    await leases.started(JOB)
    await redis.pexpire(in_progress_key(JOB), 1000)  # as if the lease had nearly run out
    await leases.renew_all()
    holder, ttl = await mark(redis)
    assert holder == "pod-a:1:aaaa"
    assert ttl > 1000


async def test_another_workers_mark_is_not_taken_over(redis: ArqRedis, caplog: pytest.LogCaptureFixture) -> None:
    await redis.set(in_progress_key(JOB), "pod-b:2:bbbb", px=LEASE_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    await leases.started(JOB)
    assert (await mark(redis))[0] == "pod-b:2:bbbb"
    assert leases.jobs == frozenset()
    assert "not ARQ's as expected" in caplog.text


async def test_a_lapsed_mark_is_not_created_again(redis: ArqRedis, caplog: pytest.LogCaptureFixture) -> None:
    """Our lease lapsed (Redis or our loop stuck past it): another worker may hold the job now, or soon."""
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    await leases.started(JOB)
    await redis.delete(in_progress_key(JOB))
    await leases.renew_all()
    assert await mark(redis) == (None, -2)
    assert leases.jobs == frozenset()
    assert "is gone or not ours" in caplog.text


async def test_a_mark_another_worker_took_after_a_lapse_is_left_to_it(redis: ArqRedis) -> None:
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    await leases.started(JOB)
    # The lease lapsed and another worker started the job: ARQ's "1", about to become that worker's lease. Only a
    # job's first take-over may replace ARQ's value; this worker took its own over already.
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    await leases.renew_all()
    holder, ttl = await mark(redis)
    assert holder == ARQ_IN_PROGRESS_VALUE
    assert ttl > LEASE_MS  # ARQ's long mark, untouched
    assert leases.jobs == frozenset()


async def test_an_ended_job_is_not_renewed(redis: ArqRedis) -> None:
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    await leases.started(JOB)
    leases.ended(JOB)
    await redis.pexpire(in_progress_key(JOB), 1000)
    await leases.renew_all()
    assert 0 < (await mark(redis))[1] <= 1000


@pytest.fixture
async def hung_redis() -> AsyncIterator[tuple[RedisServer, ArqRedis]]:
    server = RedisServer()
    server.start()
    client = connect(load_settings(redis_url=server.url), timeout_s=10.0)
    yield server, client
    server.resume()
    await client.aclose(close_connection_pool=True)
    server.stop()


async def test_a_hung_redis_delays_the_take_over_without_failing_the_job(
    hung_redis: tuple[RedisServer, ArqRedis],
) -> None:
    """Redis hangs as the job starts: the hook returns (bounded, no error for ARQ), and the next round takes over."""
    server, redis = hung_redis
    await redis.set(in_progress_key(JOB), ARQ_IN_PROGRESS_VALUE, px=ARQ_MARK_MS)
    leases = InProgressLeases(redis, holder="pod-a:1:aaaa")
    server.pause()
    try:
        await asyncio.wait_for(leases.started(JOB), timeout=10)
    finally:
        server.resume()
    assert (await mark(redis))[0] == ARQ_IN_PROGRESS_VALUE
    await leases.renew_all()
    holder, ttl = await mark(redis)
    assert holder == "pod-a:1:aaaa"
    assert 0 < ttl <= LEASE_MS


async def test_a_job_an_arq_worker_runs_holds_its_lease_and_ends_with_none(
    make_queue: MakeQueue, make_settings: MakeSettings, workers: Workers, sim: Sim, redis: ArqRedis
) -> None:
    """Against ARQ itself (what it writes into the mark, when it calls our hooks): the running job's mark is this
    worker's lease, and ARQ deletes it as the job ends."""
    settings = make_settings(max_document_chars=1000)
    queue = make_queue(settings)
    view = await queue.submit(client="billing", document="Hold on. [[sim:ttft_ms=1500]]", idempotency_key=None)
    job = job_id("billing", view.task_id)
    running = workers.start(settings)
    await sim.wait_for_requests(1)
    value = await redis.get(in_progress_key(job))
    ttl = int(await redis.pttl(in_progress_key(job)))
    assert value is not None
    assert value.decode() == running.worker.ctx["in_progress"].holder
    assert 0 < ttl <= LEASE_MS
    assert (await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))).status == "complete"
    assert await redis.exists(in_progress_key(job)) == 0
    assert running.worker.ctx["in_progress"].jobs == frozenset()
