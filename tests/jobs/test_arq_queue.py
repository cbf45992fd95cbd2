"""`ArqJobQueue` with real ARQ workers in this process, a real Redis and the simulator over HTTP."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from claude_gateway import errors
from claude_gateway.jobs import ArqJobQueue, JobView
from claude_gateway.jobs.codec import deserialize
from claude_gateway.jobs.constants import CHUNK_CHARS, QUEUE_NAME
from claude_gateway.jobs.keys import job_id
from claude_gateway.simulator import BackgroundSimulator, SimulatorConfig
from tests.gateway.test_upstream_client import OVERLOADED, CannedServer

from .support import (
    MakeQueue,
    MakeSettings,
    MakeUpstream,
    Sim,
    Workers,
    free_port,
    jobs_total,
    long_document,
    wait_for_outcome,
)


def upstream_requests(model: str, outcome: str) -> float:
    labels = {"model": model, "outcome": outcome}
    return REGISTRY.get_sample_value("claude_gateway_upstream_requests_total", labels) or 0.0


class TestSubmit:
    async def test_a_job_completes_with_the_summary(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="Quarterly report: sales up 4%.", idempotency_key=None)
        assert view.status == "processing"
        assert len(view.task_id) == 32
        assert await queue.get(client="billing", task_id=view.task_id) == JobView(view.task_id, "processing")

        await workers.run_burst(make_settings())

        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"
        assert done.result
        assert done.error is None
        assert await sim.requests() == 1

    async def test_the_prompt_is_the_document_with_the_summary_instruction(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        await queue.submit(client="billing", document="The cat sat on the mat.", idempotency_key=None)
        await workers.run_burst(make_settings())
        request = (await sim.stats())["last_request"]
        assert request["model"] == make_settings().default_model
        assert request["max_tokens"] == 1024
        assert "Summarize this document" in request["messages"][0]["content"]
        assert "The cat sat on the mat." in request["messages"][0]["content"]

    async def test_a_long_document_is_summarised_in_chunks_then_combined(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        document = long_document(chunks=3)
        assert 2 * CHUNK_CHARS < len(document) <= 3 * CHUNK_CHARS
        view = await queue.submit(client="billing", document=document, idempotency_key=None)

        await workers.run_burst(make_settings())

        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"
        assert await sim.requests() == 4  # three chunks, then one summary of their summaries
        last = (await sim.stats())["last_request"]["messages"][0]["content"]
        assert "summaries of consecutive parts" in last
        assert "[Part 3]" in last

    async def test_an_oversized_document_is_refused_before_anything_is_queued(
        self, make_queue: MakeQueue, make_settings: MakeSettings, redis: ArqRedis
    ) -> None:
        queue = make_queue(make_settings(max_document_chars=100))
        with pytest.raises(errors.PayloadTooLarge):
            await queue.submit(client="billing", document="x" * 101, idempotency_key=None)
        assert await redis.zcard(QUEUE_NAME) == 0
        assert await queue.queued() == 0

    async def test_a_blank_document_is_refused(self, make_queue: MakeQueue) -> None:
        with pytest.raises(errors.InvalidRequest):
            await make_queue().submit(client="billing", document="  \n ", idempotency_key=None)

    async def test_the_result_does_not_keep_the_document(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, redis: ArqRedis
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="secret plans for the moon", idempotency_key=None)
        await workers.run_burst(make_settings())
        raw = await redis.get(f"arq:result:{job_id('billing', view.task_id)}")
        assert raw is not None
        assert b"secret plans" not in raw
        assert b"billing" not in raw

    async def test_metrics_count_enqueued_and_complete(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        enqueued, complete = jobs_total("enqueued"), jobs_total("complete")
        runs = REGISTRY.get_sample_value("claude_gateway_job_duration_seconds_count") or 0.0
        queue = make_queue()
        for _ in range(3):
            await queue.submit(client="billing", document="a short note", idempotency_key=None)
        assert await queue.queued() == 3
        assert REGISTRY.get_sample_value("claude_gateway_jobs_queued") == 3
        await workers.run_burst(make_settings())
        assert jobs_total("enqueued") - enqueued == 3
        assert jobs_total("complete") - complete == 3
        assert (REGISTRY.get_sample_value("claude_gateway_job_duration_seconds_count") or 0.0) - runs == 3
        assert await queue.queued() == 0


class TestIdempotency:
    async def test_the_same_key_returns_the_same_task(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        enqueued = jobs_total("enqueued")
        first = await queue.submit(client="billing", document="one", idempotency_key="order-42")
        again = await queue.submit(client="billing", document="one", idempotency_key="order-42")
        assert again.task_id == first.task_id
        assert jobs_total("enqueued") - enqueued == 1

        await workers.run_burst(make_settings())
        after = await queue.submit(client="billing", document="one", idempotency_key="order-42")
        assert after.task_id == first.task_id
        assert after.status == "complete"
        assert await sim.requests() == 1

    async def test_the_key_is_scoped_per_client(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        mine = await queue.submit(client="billing", document="one", idempotency_key="order-42")
        theirs = await queue.submit(client="search", document="one", idempotency_key="order-42")
        assert mine.task_id != theirs.task_id

    async def test_different_keys_make_different_tasks(self, make_queue: MakeQueue) -> None:
        queue = make_queue()
        first = await queue.submit(client="billing", document="one", idempotency_key="a")
        second = await queue.submit(client="billing", document="one", idempotency_key="b")
        assert first.task_id != second.task_id


class TestIsolation:
    async def test_another_client_cannot_see_a_task(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="private", idempotency_key=None)
        assert await queue.get(client="search", task_id=view.task_id) is None
        await workers.run_burst(make_settings())
        assert await queue.get(client="search", task_id=view.task_id) is None
        assert await queue.cancel(client="search", task_id=view.task_id) is False
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"

    async def test_an_unknown_task_is_none(self, make_queue: MakeQueue) -> None:
        assert await make_queue().get(client="billing", task_id="0" * 32) is None


class TestFailures:
    async def test_a_permanent_upstream_error_fails_cleanly_without_retrying(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        failed = jobs_total("failed")
        queue = make_queue()
        view = await queue.submit(client="billing", document="[[sim:fault=bad_request]] text", idempotency_key=None)
        await workers.run_burst(make_settings())
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done == JobView(view.task_id, "failed", error="Claude API rejected the request as invalid")
        assert await sim.requests() == 1
        assert jobs_total("failed") - failed == 1

    async def test_bad_upstream_credentials_read_as_a_configuration_error(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="[[sim:fault=auth]] text", idempotency_key=None)
        await workers.run_burst(make_settings())
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.error == "Internal configuration error"
        assert "x-api-key" not in (done.error or "")

    async def test_a_transient_error_is_retried_then_completes(
        self,
        make_queue: MakeQueue,
        workers: Workers,
        make_settings: MakeSettings,
        make_upstream: MakeUpstream,
        sim: Sim,
    ) -> None:
        """The first try meets a real 529 (from a server that answers nothing else), the second passes."""
        overloaded = CannedServer(529, OVERLOADED)
        async with overloaded as overloaded_url:
            overloaded_upstream = make_upstream(anthropic_base_url=overloaded_url)

            async def overloaded_on_first_try(ctx: dict[str, Any]) -> None:
                if ctx["job_try"] == 1:  # ARQ's ctx is the job's own copy: the second try has the worker's client
                    ctx["upstream"] = overloaded_upstream

            retried, complete = jobs_total("retried"), jobs_total("complete")
            queue = make_queue()
            view = await queue.submit(client="billing", document="a note", idempotency_key=None)
            await workers.run_burst(make_settings(), on_job_start=overloaded_on_first_try)
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"
        assert len(overloaded.requests) == 1  # UPSTREAM_MAX_RETRIES is 2, but a job's call is made once a try
        assert await sim.requests() == 1
        assert jobs_total("retried") - retried == 1
        assert jobs_total("complete") - complete == 1

    async def test_an_unreachable_upstream_is_retried_until_it_comes_back(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        later = BackgroundSimulator(SimulatorConfig(ttft_ms=0, tokens_per_s=0))  # port bound, not listening yet
        try:
            settings = make_settings(anthropic_base_url=later.base_url, job_max_tries=20)
            queue = make_queue(settings)
            retried = jobs_total("retried")
            view = await queue.submit(client="billing", document="a note", idempotency_key=None)
            running = workers.start(settings)
            while jobs_total("retried") - retried < 2:
                await asyncio.sleep(0.02)
            later.start()
            done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
            assert done.status == "complete"
            assert await Sim(later.base_url).requests() == 1
            await running.stop()
        finally:
            later.stop()

    async def test_retries_exhausted_fail_with_a_clean_error(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        retried, failed = jobs_total("retried"), jobs_total("failed")
        queue = make_queue()
        view = await queue.submit(client="billing", document="[[sim:fault=overloaded]] a note", idempotency_key=None)
        await workers.run_burst(make_settings(job_max_tries=3))
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done == JobView(view.task_id, "failed", error="Claude is overloaded. Try again. (gave up after 3 tries)")
        assert await sim.requests() == 3
        assert jobs_total("retried") - retried == 2
        assert jobs_total("failed") - failed == 1

    async def test_a_rate_limit_is_re_enqueued_with_the_upstream_retry_after(
        self,
        make_queue: MakeQueue,
        workers: Workers,
        make_settings: MakeSettings,
        redis: ArqRedis,
        sim: Sim,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 429 with `retry-after: 1`: ARQ defers the job exactly that long (no jittered backoff), and each try makes
        one upstream call although UPSTREAM_MAX_RETRIES is 2 (the client would have retried in place)."""
        retried = jobs_total("retried")
        model = make_settings().default_model
        rate_limited = upstream_requests(model, "rate_limited")
        queue = make_queue()
        view = await queue.submit(
            client="billing", document="[[sim:fault=rate_limit retry_after=1]] a note", idempotency_key=None
        )
        with caplog.at_level(logging.INFO, logger="arq.worker"):
            await workers.run_burst(make_settings(job_max_tries=2, upstream_max_retries=2))
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.error == "Claude rate limit reached. Try again in a moment. (gave up after 2 tries)"
        stats = await sim.stats()
        assert stats["requests"] == 2
        assert stats["responses"] == {"429": 2}
        assert jobs_total("retried") - retried == 1
        assert upstream_requests(model, "rate_limited") - rate_limited == 2  # one call a try, counted as a route's
        deferrals = [record.getMessage() for record in caplog.records if "retrying job in" in record.getMessage()]
        assert len(deferrals) == 1
        assert deferrals[0].endswith("retrying job in 1.00s")
        info = await Job(job_id("billing", view.task_id), redis, QUEUE_NAME, deserialize).result_info()
        assert info is not None
        assert info.job_try == 2
        assert (info.start_time - info.enqueue_time).total_seconds() >= 1.0

    async def test_a_5xx_is_retried_as_the_client_would_retry_it(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="[[sim:fault=server_error]] a note", idempotency_key=None)
        await workers.run_burst(make_settings(job_max_tries=2))
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done == JobView(view.task_id, "failed", error="Claude API error (gave up after 2 tries)")
        assert await sim.requests() == 2


class TestResults:
    async def test_results_expire_after_their_ttl(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        settings = make_settings(job_result_ttl_s=1)
        queue = make_queue(settings)
        view = await queue.submit(client="billing", document="short-lived", idempotency_key=None)
        await workers.run_burst(settings)
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"
        for _ in range(300):
            if await queue.get(client="billing", task_id=view.task_id) is None:
                break
            await asyncio.sleep(0.02)
        assert await queue.get(client="billing", task_id=view.task_id) is None

    async def test_a_restarted_api_reads_the_results(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        before = make_queue()
        view = await before.submit(client="billing", document="survives restarts", idempotency_key=None)
        await before.aclose()
        await workers.run_burst(make_settings())
        after = make_queue()
        done = await after.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"


class TestCancel:
    async def test_a_queued_job_is_cancelled_before_it_runs(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="never mind", idempotency_key=None)
        assert await queue.cancel(client="billing", task_id=view.task_id) is True  # no worker yet: pending
        await workers.run_burst(make_settings())
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done == JobView(view.task_id, "failed", error="Task was cancelled")
        assert await sim.requests() == 0

    async def test_a_running_job_is_cancelled(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, sim: Sim
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="[[sim:ttft_ms=20000]] slow", idempotency_key=None)
        workers.start(make_settings())
        await sim.wait_for_requests(1)
        assert await queue.cancel(client="billing", task_id=view.task_id) is True
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done == JobView(view.task_id, "failed", error="Task was cancelled")

    async def test_a_finished_job_cannot_be_cancelled(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings
    ) -> None:
        queue = make_queue()
        view = await queue.submit(client="billing", document="done already", idempotency_key=None)
        await workers.run_burst(make_settings())
        assert await queue.cancel(client="billing", task_id=view.task_id) is False
        done = await queue.get(client="billing", task_id=view.task_id)
        assert done is not None
        assert done.status == "complete"

    async def test_an_unknown_task_cannot_be_cancelled(self, make_queue: MakeQueue) -> None:
        assert await make_queue().cancel(client="billing", task_id="f" * 32) is False


class TestTracing:
    async def test_the_job_span_is_in_the_enqueuing_request_trace(
        self, make_queue: MakeQueue, workers: Workers, make_settings: MakeSettings, spans: InMemorySpanExporter
    ) -> None:
        queue = make_queue()
        tracer = trace.get_tracer("tests")
        with tracer.start_as_current_span("POST /analyze") as request_span:
            await queue.submit(client="billing", document="traced", idempotency_key=None)
        await workers.run_burst(make_settings())

        finished = spans.get_finished_spans()
        (job_span,) = [span for span in finished if span.name == "analyze_document"]
        (chat_span,) = [span for span in finished if span.name.startswith("chat ")]
        request = request_span.get_span_context()
        assert job_span.context is not None
        assert job_span.context.trace_id == request.trace_id
        assert job_span.parent is not None
        assert job_span.parent.span_id == request.span_id
        assert chat_span.parent is not None
        assert chat_span.parent.span_id == job_span.context.span_id
        assert job_span.attributes is not None
        assert job_span.attributes["claude_gateway.job.outcome"] == "complete"
        assert job_span.attributes["claude_gateway.job.attempt"] == 1


class TestRedisDown:
    async def test_an_unreachable_redis_is_a_503_and_ping_is_false(self, make_settings: MakeSettings) -> None:
        queue = ArqJobQueue(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.2))
        errors_before = REGISTRY.get_sample_value("claude_gateway_redis_errors_total", {"operation": "jobs"}) or 0.0
        try:
            assert await queue.ping() is False
            with pytest.raises(errors.Overloaded) as raised:
                await queue.submit(client="billing", document="text", idempotency_key=None)
            assert raised.value.status_code == 503
            assert raised.value.headers["Retry-After"] == "5"
            with pytest.raises(errors.Overloaded):
                await queue.get(client="billing", task_id="0" * 32)
            errors_after = REGISTRY.get_sample_value("claude_gateway_redis_errors_total", {"operation": "jobs"})
            assert (errors_after or 0.0) - errors_before == 3
            assert REGISTRY.get_sample_value("claude_gateway_redis_up") == 0
        finally:
            await queue.aclose()
