"""Per-client caps on queued document bytes, over a real Redis: a key at its cap is refused while another is not, and
its bytes come back as its jobs end (finished or cancelled), in every API process alike."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from claude_gateway.errors import PayloadTooLarge
from claude_gateway.jobs import ArqJobQueue, InProcessJobQueue, JobView
from claude_gateway.jobs.queued_bytes import QUEUE_FULL_RETRY_AFTER_S, JobQueueFull

from .support import MakeSettings, Sim, Workers, wait_for_outcome

DOCUMENT_BYTES = 1000
CAP = 3 * DOCUMENT_BYTES
# A job whose upstream call takes this long is still running when the test cancels it.
SLOW = "[[sim:ttft_ms=30000]] "

MakeQueue = Callable[..., ArqJobQueue]


def document(prefix: str = "", size: int = DOCUMENT_BYTES) -> str:
    return prefix + "x" * (size - len(prefix))


async def fill(queue: ArqJobQueue | InProcessJobQueue, client: str, prefix: str = "") -> list[JobView]:
    return [
        await queue.submit(client=client, document=document(prefix + str(i)), idempotency_key=None) for i in range(3)
    ]


async def test_a_key_at_its_cap_is_refused_while_another_is_not(
    make_queue: MakeQueue, make_settings: MakeSettings
) -> None:
    settings = make_settings(jobs_max_queued_bytes_per_client=CAP)
    # Two API processes: the cap is shared through Redis, not per process.
    first, second = make_queue(settings), make_queue(settings)
    await fill(first, "billing")
    with pytest.raises(JobQueueFull) as refused:
        await second.submit(client="billing", document=document("one more"), idempotency_key=None)
    assert refused.value.status_code == 429
    assert refused.value.headers["Retry-After"] == str(QUEUE_FULL_RETRY_AFTER_S)
    accepted = await second.submit(client="search", document=document("another key"), idempotency_key=None)
    assert accepted.status == "processing"


async def test_the_same_idempotency_key_is_counted_once(make_queue: MakeQueue, make_settings: MakeSettings) -> None:
    queue = make_queue(make_settings(jobs_max_queued_bytes_per_client=CAP))
    for _ in range(5):
        await queue.submit(client="billing", document=document("same"), idempotency_key="only-once")
    await queue.submit(client="billing", document=document("second"), idempotency_key=None)
    await queue.submit(client="billing", document=document("third"), idempotency_key=None)
    with pytest.raises(JobQueueFull):
        await queue.submit(client="billing", document=document("fourth"), idempotency_key=None)


async def test_a_document_larger_than_the_cap_is_413(make_queue: MakeQueue, make_settings: MakeSettings) -> None:
    queue = make_queue(make_settings(jobs_max_queued_bytes_per_client=CAP, max_document_chars=10 * CAP))
    with pytest.raises(PayloadTooLarge):
        await queue.submit(client="billing", document=document(size=CAP + 1), idempotency_key=None)


async def test_the_bytes_come_back_when_jobs_finish(
    make_queue: MakeQueue, make_settings: MakeSettings, workers: Workers
) -> None:
    settings = make_settings(jobs_max_queued_bytes_per_client=CAP)
    queue = make_queue(settings)
    views = await fill(queue, "billing")
    await workers.run_burst(settings)
    for task_id in [view.task_id for view in views]:
        done = await wait_for_outcome(partial(queue.get, client="billing", task_id=task_id))
        assert done.status == "complete"
    again = await fill(queue, "billing", prefix="again")
    assert [view.status for view in again] == ["processing"] * 3


async def test_the_bytes_come_back_when_a_running_job_is_cancelled(
    make_queue: MakeQueue, make_settings: MakeSettings, workers: Workers, sim: Sim
) -> None:
    settings = make_settings(jobs_max_queued_bytes_per_client=CAP, upstream_timeout_s=60.0)
    queue = make_queue(settings)
    views = await fill(queue, "billing", prefix=SLOW)
    workers.start(settings)
    await sim.wait_for_requests(3)  # all three running, each waiting on its upstream call
    assert await queue.cancel(client="billing", task_id=views[0].task_id)
    accepted = await queue.submit(client="billing", document=document("after the cancel"), idempotency_key=None)
    assert accepted.status == "processing"
    still = [await queue.get(client="billing", task_id=view.task_id) for view in views[1:]]
    assert [view.status for view in still if view is not None] == ["processing", "processing"]


async def test_the_bytes_of_a_job_cancelled_before_it_ran_come_back(
    make_queue: MakeQueue, make_settings: MakeSettings, workers: Workers
) -> None:
    """Cancelled while no worker runs: the abort lands later, when a worker finds the job (ARQ then ends it without
    the hook that gives bytes back); the cap sees the job has ended and counts its bytes no more."""
    settings = make_settings(jobs_max_queued_bytes_per_client=CAP)
    queue = make_queue(settings)
    views = await fill(queue, "billing", prefix=SLOW)
    assert await queue.cancel(client="billing", task_id=views[0].task_id)  # pending: no worker yet
    with pytest.raises(JobQueueFull):
        await queue.submit(client="billing", document=document("too soon"), idempotency_key=None)
    workers.start(settings, max_jobs=1)  # takes the aborted job first, then one slow job
    cancelled = await wait_for_outcome(lambda: queue.get(client="billing", task_id=views[0].task_id))
    assert cancelled.status == "failed"
    accepted = await queue.submit(client="billing", document=document("after the abort"), idempotency_key=None)
    assert accepted.status == "processing"


async def test_in_process_the_cap_holds_and_the_bytes_come_back(
    make_inprocess_queue: Callable[..., InProcessJobQueue], sim: Sim
) -> None:
    queue = make_inprocess_queue(jobs_max_queued_bytes_per_client=CAP, upstream_timeout_s=60.0)
    views = await fill(queue, "billing", prefix=SLOW)
    with pytest.raises(JobQueueFull):
        await queue.submit(client="billing", document=document("one more"), idempotency_key=None)
    await queue.submit(client="search", document=document("another key"), idempotency_key=None)
    await sim.wait_for_requests(3)
    assert await queue.cancel(client="billing", task_id=views[0].task_id)
    accepted = await queue.submit(client="billing", document=document("after the cancel"), idempotency_key=None)
    assert accepted.status == "processing"
