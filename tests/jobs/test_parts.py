"""The pieces of a job: chunking, resuming from stored parts, retry waits, storage format, ids, worker settings."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from arq.connections import ArqRedis
from arq.worker import JobExecutionFailed
from prometheus_client import REGISTRY

from claude_gateway.errors import GatewayError, UpstreamOverloaded, UpstreamRateLimited, UpstreamRejected
from claude_gateway.jobs.arq_queue import connect
from claude_gateway.jobs.attempt import retry_delay_s
from claude_gateway.jobs.codec import JobFailed, deserialize, failure_of, serialize
from claude_gateway.jobs.constants import CHUNK_CHARS, QUEUE_NAME, RETRY_AFTER_CAP_S
from claude_gateway.jobs.keys import client_namespace, health_check_key, job_id, new_task_id, parts_key
from claude_gateway.jobs.summarise import MemoryParts, RedisParts, split_document, summarise
from claude_gateway.jobs.timeouts import call_budget_s, job_timeout_s, planned_rounds
from claude_gateway.jobs.worker import worker_settings
from claude_gateway.settings import load_settings
from claude_gateway.upstream.client import UpstreamAnswer, UpstreamClient

from .support import MakeSettings, MakeUpstream, Sim, free_port, long_document


class TestSplitDocument:
    def test_a_short_document_is_one_chunk(self) -> None:
        assert split_document("short", 100) == ["short"]

    def test_chunks_cover_the_document_and_respect_the_size(self) -> None:
        text = long_document(chunks=3)
        chunks = split_document(text)
        assert "".join(chunks) == text
        assert len(chunks) == 3
        assert all(len(chunk) <= CHUNK_CHARS for chunk in chunks)
        assert all(chunk.endswith("\n\n") for chunk in chunks[:-1])  # cut between paragraphs

    def test_a_text_without_breaks_is_cut_at_the_size(self) -> None:
        assert split_document("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]

    @pytest.mark.parametrize(
        ("breaks", "cut"),
        [
            ({92: "\n\n", 96: "\n", 98: " "}, 94),  # a paragraph break wins over later line and word breaks
            ({92: "\n", 95: ". ", 98: " "}, 93),
            ({92: ". ", 97: " "}, 94),
            ({92: " "}, 93),
            ({50: "\n\n"}, 100),  # before the last 10%: too early, cut at the size
        ],
    )
    def test_the_cut_prefers_paragraphs_then_lines_sentences_words(self, breaks: dict[int, str], cut: int) -> None:
        text = list("a" * 120)
        for position, mark in breaks.items():
            text[position : position + len(mark)] = mark
        document = "".join(text)
        assert len(split_document(document, 100)[0]) == cut


class TestTimeouts:
    def test_the_defaults(self) -> None:
        settings = load_settings(redis_url=None)
        assert call_budget_s(settings) == 30  # one try: a job's calls are not retried in place
        assert planned_rounds(1_000_000) == 4  # 12 chunks, 4 at a time, then one combine
        assert job_timeout_s(settings) == 4 * 30

    @pytest.mark.parametrize(("chars", "rounds"), [(1, 1), (CHUNK_CHARS, 1), (CHUNK_CHARS + 1, 2), (10_000_000, 31)])
    def test_planned_rounds(self, chars: int, rounds: int) -> None:
        assert planned_rounds(chars) == rounds


def failed(error: GatewayError, failure: BaseException | None) -> GatewayError:
    error.__cause__ = failure
    return error


class TestRetryDelay:
    """A job waits as the client's retry policy says, Anthropic's `retry-after` capped at RETRY_AFTER_CAP_S."""

    @pytest.fixture
    def upstream(self) -> UpstreamClient:
        return UpstreamClient(load_settings(redis_url=None))  # its pool opens on first use: none here

    @pytest.mark.parametrize(("retry_after", "wait"), [("30", 30.0), ("0.5", 0.5), ("10000", RETRY_AFTER_CAP_S)])
    def test_anthropics_retry_after_up_to_a_cap(self, upstream: UpstreamClient, retry_after: str, wait: float) -> None:
        error = failed(UpstreamRateLimited(), UpstreamAnswer(429, {"retry-after": retry_after}))
        assert retry_delay_s(upstream, error, attempt=1) == wait

    @pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (30, 8.0)])
    def test_else_the_policys_backoff_by_try(self, upstream: UpstreamClient, attempt: int, ceiling: float) -> None:
        error = failed(UpstreamOverloaded(), UpstreamAnswer(529, {}))
        for _ in range(20):
            assert 0.75 * ceiling <= (retry_delay_s(upstream, error, attempt) or 0.0) <= ceiling

    def test_none_for_what_must_not_be_retried(self, upstream: UpstreamClient) -> None:
        assert retry_delay_s(upstream, failed(UpstreamRejected(), UpstreamAnswer(400, {})), attempt=1) is None
        overloaded = failed(UpstreamOverloaded(), UpstreamAnswer(529, {"x-should-retry": "false"}))
        assert retry_delay_s(upstream, overloaded, attempt=1) is None


class TestCodec:
    def test_a_job_keeps_its_arguments(self) -> None:
        job = {"t": None, "f": "analyze_document", "a": ["id", "text"], "k": {"client": "c"}, "et": 1}
        assert deserialize(serialize(job)) == job

    def test_a_result_drops_the_arguments(self) -> None:
        result = {
            "t": 1,
            "f": "f",
            "a": ["id", "secret text"],
            "k": {"client": "c"},
            "et": 1,
            "s": True,
            "r": {"summary": "ok"},
            "st": 2,
            "ft": 3,
            "q": QUEUE_NAME,
            "id": "x",
        }
        raw = serialize(result)
        assert b"secret text" not in raw
        assert deserialize(raw)["r"] == {"summary": "ok"}

    @pytest.mark.parametrize(
        ("error", "message"),
        [
            (JobFailed("Claude is overloaded. Try again."), "Claude is overloaded. Try again."),
            (asyncio.CancelledError(), "Task was cancelled"),
            (TimeoutError(), "Task took too long and was stopped"),
            (
                JobExecutionFailed("max 5 retries exceeded"),
                "Task was interrupted too many times (its worker stopped while running it)",
            ),
            (JobExecutionFailed("job expired"), "Task expired before a worker could run it"),
            (RuntimeError("upstream said: sk-ant-secret"), "Internal error"),
        ],
    )
    def test_a_failure_is_stored_as_our_message_only(self, error: BaseException, message: str) -> None:
        result = {"t": 1, "f": "f", "a": [], "k": {}, "et": 1, "s": False, "r": error, "st": 2, "ft": 3}
        raw = serialize(result)
        assert b"sk-ant-secret" not in raw
        assert failure_of(deserialize(raw)["r"]).message == message

    def test_a_cancellation_comes_back_as_one(self) -> None:
        result = {"t": 1, "f": "f", "a": [], "k": {}, "et": 1, "s": False, "r": asyncio.CancelledError()}
        assert isinstance(deserialize(serialize(result))["r"], asyncio.CancelledError)


class TestKeys:
    def test_task_ids_are_fresh_uuid4_hex(self) -> None:
        first, second = new_task_id("billing", None), new_task_id("billing", None)
        assert first != second
        assert len(first) == 32
        assert int(first, 16) >= 0

    def test_an_idempotency_key_gives_the_same_id_per_client(self) -> None:
        assert new_task_id("billing", "k") == new_task_id("billing", "k")
        assert new_task_id("billing", "k") != new_task_id("search", "k")
        assert len(new_task_id("billing", "k")) == 32

    def test_job_ids_and_keys_are_namespaced_by_a_hash_of_the_client(self) -> None:
        assert job_id("billing", "t") != job_id("search", "t")
        assert "billing" not in job_id("billing", "t")
        assert job_id("billing", "t").startswith(client_namespace("billing"))
        assert parts_key(job_id("billing", "t")).startswith("claude-gateway:job:")

    def test_the_health_key_is_per_host(self) -> None:
        assert health_check_key() == f"claude-gateway:queue:health-check:{socket.gethostname()}"


class TestWorkerSettings:
    def test_the_arq_settings(self, make_settings: MakeSettings) -> None:
        settings = make_settings(job_max_tries=7, job_result_ttl_s=120, upstream_timeout_s=30, upstream_max_retries=2)
        config = worker_settings(settings)
        assert config["queue_name"] == QUEUE_NAME
        assert [function.name for function in config["functions"]] == ["analyze_document"]
        assert config["max_tries"] == 7
        assert config["keep_result"] == 120
        assert config["allow_abort_jobs"] is True
        assert config["job_completion_wait"] == 30  # one call at UPSTREAM_TIMEOUT_S
        assert config["job_timeout"] == job_timeout_s(settings)
        assert config["health_check_key"] == health_check_key()
        assert config["log_results"] is False

    def test_job_arguments_stay_out_of_the_logs(
        self, make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
    ) -> None:
        worker_settings(make_settings())
        with caplog.at_level(logging.INFO, logger="arq.worker"):
            logging.getLogger("arq.worker").info(
                "%6.2fs → %s(%s)%s", 0.5, "ns-task:analyze_document", "'task', 'my private document'", ""
            )
        assert "my private document" not in caplog.text
        assert "ns-task:analyze_document(…)" in caplog.text


class TestSummarise:
    async def test_stored_parts_are_not_paid_for_twice(
        self, make_upstream: MakeUpstream, redis: ArqRedis, sim: Sim
    ) -> None:
        upstream = make_upstream()
        parts = RedisParts(redis, parts_key("job-1"))
        document = long_document(chunks=3)
        first = await summarise(upstream, document, client="billing", model="claude-sonnet-4-6", parts=parts)
        assert (first.chunks, first.levels, first.calls) == (3, 2, 4)

        again = await summarise(upstream, document, client="billing", model="claude-sonnet-4-6", parts=parts)
        assert again.calls == 0
        assert again.text == first.text

        edited = document[: -len("boy.\n\n")] + "girl.\n\n"  # the last chunk changes, the first two do not
        third = await summarise(upstream, edited, client="billing", model="claude-sonnet-4-6", parts=parts)
        assert third.calls == 2  # the last chunk and the combine step
        assert await sim.requests() == 6
        assert 0 < await redis.ttl(parts_key("job-1")) <= 24 * 3600

    async def test_an_empty_answer_fails_the_job(self, make_upstream: MakeUpstream) -> None:
        with pytest.raises(JobFailed, match="empty summary"):
            await summarise(
                make_upstream(), "[[sim:fault=empty]] x", client="c", model="claude-sonnet-4-6", parts=MemoryParts()
            )

    async def test_a_failed_call_is_made_once_and_raised_with_its_cause(
        self, make_upstream: MakeUpstream, sim: Sim
    ) -> None:
        """The job is what retries: its calls are not retried in place, whatever UPSTREAM_MAX_RETRIES says."""
        upstream = make_upstream(upstream_max_retries=2)
        with pytest.raises(UpstreamOverloaded) as raised:
            await summarise(
                upstream, "[[sim:fault=overloaded]] x", client="c", model="claude-sonnet-4-6", parts=MemoryParts()
            )
        assert await sim.requests() == 1
        answer = raised.value.__cause__
        assert isinstance(answer, UpstreamAnswer)
        assert answer.status == 529

    async def test_a_redis_failure_only_loses_the_saving(
        self, make_upstream: MakeUpstream, make_settings: MakeSettings, sim: Sim
    ) -> None:
        unreachable = connect(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), timeout_s=0.2)
        errors_before = REGISTRY.get_sample_value("claude_gateway_redis_errors_total", {"operation": "jobs"}) or 0.0
        try:
            summary = await summarise(
                make_upstream(), "a note", client="c", model="claude-sonnet-4-6", parts=RedisParts(unreachable, "k")
            )
            assert summary.calls == 1
            assert await sim.requests() == 1
            errors_after = REGISTRY.get_sample_value("claude_gateway_redis_errors_total", {"operation": "jobs"})
            assert (errors_after or 0.0) - errors_before == 2  # the read before the call, the write after it
        finally:
            await unreachable.aclose(close_connection_pool=True)
