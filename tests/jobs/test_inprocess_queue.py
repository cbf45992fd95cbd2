"""`InProcessJobQueue` (no REDIS_URL): the same behaviour as ARQ jobs where it applies, with the simulator over HTTP."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from claude_gateway import errors
from claude_gateway.jobs import ArqJobQueue, InProcessJobQueue, JobView, create_job_queue
from claude_gateway.simulator import BackgroundSimulator, SimulatorConfig
from tests.gateway.test_upstream_client import OVERLOADED, CannedServer

from .support import (
    MakeInProcessQueue,
    MakeSettings,
    MakeUpstream,
    Sim,
    jobs_total,
    long_document,
    wait_for_outcome,
)


class TestSubmit:
    async def test_a_job_completes_with_the_summary(self, make_inprocess_queue: MakeInProcessQueue, sim: Sim) -> None:
        enqueued, complete = jobs_total("enqueued"), jobs_total("complete")
        queue = make_inprocess_queue()
        view = await queue.submit(client="billing", document="Sales rose 4% in Q3.", idempotency_key=None)
        assert view == JobView(view.task_id, "processing")
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.status == "complete"
        assert done.result
        assert await sim.requests() == 1
        assert jobs_total("enqueued") - enqueued == 1
        assert jobs_total("complete") - complete == 1

    async def test_a_long_document_is_summarised_in_chunks(
        self, make_inprocess_queue: MakeInProcessQueue, sim: Sim
    ) -> None:
        queue = make_inprocess_queue()
        view = await queue.submit(client="billing", document=long_document(chunks=2), idempotency_key=None)
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.status == "complete"
        assert await sim.requests() == 3

    async def test_an_oversized_document_is_refused(self, make_inprocess_queue: MakeInProcessQueue) -> None:
        queue = make_inprocess_queue(max_document_chars=10)
        with pytest.raises(errors.PayloadTooLarge):
            await queue.submit(client="billing", document="x" * 11, idempotency_key=None)
        assert await queue.queued() == 0

    async def test_queued_counts_unfinished_jobs(self, make_inprocess_queue: MakeInProcessQueue) -> None:
        queue = make_inprocess_queue()
        view = await queue.submit(client="billing", document="[[sim:ttft_ms=20000]] slow", idempotency_key=None)
        assert await queue.queued() == 1
        assert REGISTRY.get_sample_value("claude_gateway_jobs_queued") == 1
        assert await queue.cancel(client="billing", task_id=view.task_id)
        assert await queue.queued() == 0
        assert await queue.ping() is True


class TestIdempotencyAndIsolation:
    async def test_the_same_key_returns_the_same_task(self, make_inprocess_queue: MakeInProcessQueue, sim: Sim) -> None:
        queue = make_inprocess_queue()
        first = await queue.submit(client="billing", document="one", idempotency_key="k")
        again = await queue.submit(client="billing", document="one", idempotency_key="k")
        other = await queue.submit(client="search", document="one", idempotency_key="k")
        assert again.task_id == first.task_id
        assert other.task_id != first.task_id
        await wait_for_outcome(lambda: queue.get(client="billing", task_id=first.task_id))
        await wait_for_outcome(lambda: queue.get(client="search", task_id=other.task_id))
        assert await sim.requests() == 2

    async def test_another_client_cannot_see_or_cancel_a_task(self, make_inprocess_queue: MakeInProcessQueue) -> None:
        queue = make_inprocess_queue()
        view = await queue.submit(client="billing", document="private", idempotency_key=None)
        assert await queue.get(client="search", task_id=view.task_id) is None
        assert await queue.cancel(client="search", task_id=view.task_id) is False
        assert await queue.get(client="billing", task_id="0" * 32) is None


class TestFailures:
    async def test_a_permanent_error_fails_cleanly(self, make_inprocess_queue: MakeInProcessQueue, sim: Sim) -> None:
        queue = make_inprocess_queue()
        view = await queue.submit(client="billing", document="[[sim:fault=not_found]] x", idempotency_key=None)
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done == JobView(view.task_id, "failed", error="Claude API does not know the requested model or resource")
        assert await sim.requests() == 1

    async def test_retries_exhausted_fail(self, make_inprocess_queue: MakeInProcessQueue, sim: Sim) -> None:
        retried = jobs_total("retried")
        queue = make_inprocess_queue(job_max_tries=3)
        view = await queue.submit(client="billing", document="[[sim:fault=overloaded]] x", idempotency_key=None)
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.error == "Claude is overloaded. Try again. (gave up after 3 tries)"
        assert await sim.requests() == 3
        assert jobs_total("retried") - retried == 2

    async def test_a_rate_limit_runs_the_job_again_after_the_upstream_retry_after(
        self, make_inprocess_queue: MakeInProcessQueue, sim: Sim, spans: InMemorySpanExporter
    ) -> None:
        """One upstream call per try (UPSTREAM_MAX_RETRIES is 2: the client would retry in place), then the wait
        Anthropic asked for, exactly (its `retry-after` wins over the jittered backoff)."""
        retried = jobs_total("retried")
        queue = make_inprocess_queue(job_max_tries=2, upstream_max_retries=2)
        view = await queue.submit(
            client="billing", document="[[sim:fault=rate_limit retry_after=0.5]] x", idempotency_key=None
        )
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.error == "Claude rate limit reached. Try again in a moment. (gave up after 2 tries)"
        stats = await sim.stats()
        assert stats["requests"] == 2
        assert stats["responses"] == {"429": 2}
        assert jobs_total("retried") - retried == 1
        tries = [span for span in spans.get_finished_spans() if span.name == "analyze_document"]
        assert [(span.attributes or {}).get("claude_gateway.job.retry_in_s") for span in tries] == [0.5, None]

    async def test_a_5xx_is_retried_as_the_client_would_retry_it(
        self, make_inprocess_queue: MakeInProcessQueue, sim: Sim
    ) -> None:
        queue = make_inprocess_queue(job_max_tries=2)
        view = await queue.submit(client="billing", document="[[sim:fault=server_error]] x", idempotency_key=None)
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.error == "Claude API error (gave up after 2 tries)"
        assert await sim.requests() == 2

    async def test_x_should_retry_false_fails_at_once(self, make_inprocess_queue: MakeInProcessQueue) -> None:
        server = CannedServer(529, OVERLOADED, headers={"x-should-retry": "false"})
        async with server as url:
            queue = make_inprocess_queue(anthropic_base_url=url, job_max_tries=5)
            view = await queue.submit(client="billing", document="a note", idempotency_key=None)
            done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.error == "Claude is overloaded. Try again."
        assert len(server.requests) == 1

    async def test_an_unreachable_upstream_is_retried_until_it_comes_back(
        self, make_inprocess_queue: MakeInProcessQueue
    ) -> None:
        later = BackgroundSimulator(SimulatorConfig(ttft_ms=0, tokens_per_s=0))  # port bound, not listening yet
        try:
            queue = make_inprocess_queue(anthropic_base_url=later.base_url, job_max_tries=50)
            retried = jobs_total("retried")
            view = await queue.submit(client="billing", document="a note", idempotency_key=None)
            while jobs_total("retried") - retried < 2:
                await asyncio.sleep(0.02)
            later.start()
            done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
            assert done.status == "complete"
            assert await Sim(later.base_url).requests() == 1
        finally:
            later.stop()


class TestResultsAndCancel:
    async def test_results_expire_after_their_ttl(self, make_inprocess_queue: MakeInProcessQueue) -> None:
        queue = make_inprocess_queue(job_result_ttl_s=1)
        view = await queue.submit(client="billing", document="short-lived", idempotency_key=None)
        done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        assert done.status == "complete"
        for _ in range(300):
            if await queue.get(client="billing", task_id=view.task_id) is None:
                break
            await asyncio.sleep(0.02)
        assert await queue.get(client="billing", task_id=view.task_id) is None

    async def test_a_running_job_is_cancelled(self, make_inprocess_queue: MakeInProcessQueue, sim: Sim) -> None:
        queue = make_inprocess_queue()
        view = await queue.submit(client="billing", document="[[sim:ttft_ms=20000]] slow", idempotency_key=None)
        await sim.wait_for_requests(1)
        assert await queue.cancel(client="billing", task_id=view.task_id) is True
        assert await queue.get(client="billing", task_id=view.task_id) == JobView(
            view.task_id, "failed", error="Task was cancelled"
        )
        assert await queue.cancel(client="billing", task_id=view.task_id) is False

    async def test_a_queued_job_is_cancelled_before_it_runs(
        self, make_inprocess_queue: MakeInProcessQueue, sim: Sim
    ) -> None:
        queue = make_inprocess_queue(max_jobs=1)
        running = await queue.submit(client="billing", document="[[sim:ttft_ms=20000]] slow", idempotency_key=None)
        waiting = await queue.submit(client="billing", document="waits its turn", idempotency_key=None)
        await sim.wait_for_requests(1)
        assert await queue.cancel(client="billing", task_id=waiting.task_id) is True
        assert await queue.cancel(client="billing", task_id=running.task_id) is True
        assert await sim.requests() == 1
        cancelled = await queue.get(client="billing", task_id=waiting.task_id)
        assert cancelled == JobView(waiting.task_id, "failed", error="Task was cancelled")


class TestTracing:
    async def test_the_job_span_is_in_the_enqueuing_request_trace(
        self, make_inprocess_queue: MakeInProcessQueue, spans: InMemorySpanExporter
    ) -> None:
        queue = make_inprocess_queue()
        with trace.get_tracer("tests").start_as_current_span("POST /analyze") as request_span:
            view = await queue.submit(client="billing", document="traced", idempotency_key=None)
        await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
        finished = spans.get_finished_spans()
        (job_span,) = [span for span in finished if span.name == "analyze_document"]
        (chat_span,) = [span for span in finished if span.name.startswith("chat ")]
        assert job_span.context is not None
        assert job_span.context.trace_id == request_span.get_span_context().trace_id
        assert chat_span.parent is not None
        assert chat_span.parent.span_id == job_span.context.span_id


class TestCreateJobQueue:
    async def test_without_redis_it_is_in_process_with_a_warning(
        self, make_settings: MakeSettings, make_upstream: MakeUpstream, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="claude_gateway.jobs"):
            queue = create_job_queue(make_settings(redis_url=None), make_upstream())
        assert isinstance(queue, InProcessJobQueue)
        assert "visible to this process only" in caplog.text
        await queue.aclose()

    async def test_with_redis_it_is_arq(self, make_settings: MakeSettings, make_upstream: MakeUpstream) -> None:
        queue = create_job_queue(make_settings(), make_upstream())
        assert isinstance(queue, ArqJobQueue)
        assert await queue.ping() is True
        await queue.aclose()
