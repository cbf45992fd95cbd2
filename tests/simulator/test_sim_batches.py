"""Message Batches through the official SDK: created, listed, ended after the configured delay, results as JSONL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest
from anthropic.types.messages import MessageBatch
from anthropic.types.messages.batch_create_params import Request

from claude_gateway.simulator import BackgroundSimulator

from .helpers import MODEL, MakeSimulator, raw_http, sdk, user

# Short, so that a batch ends within a test; the polling below waits for it, never a fixed time.
QUICK_DELAY_S = 0.2
# Long enough that a batch is still in progress whatever the machine's load.
NEVER_ENDS_S = 3600.0
END_TIMEOUT_S = 10.0


def request(custom_id: str, text: str = "Hello", **params: object) -> Request:
    return {"custom_id": custom_id, "params": {"model": MODEL, "max_tokens": 32, "messages": user(text), **params}}  # type: ignore[typeddict-item]


async def ended(client: anthropic.AsyncAnthropic, batch_id: str) -> MessageBatch:
    deadline = time.monotonic() + END_TIMEOUT_S
    while True:
        batch = await client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        await asyncio.sleep(0.02)


@pytest.fixture
def quick(make_simulator: MakeSimulator) -> BackgroundSimulator:
    return make_simulator(batch_delay_s=QUICK_DELAY_S)


@pytest.fixture
async def quick_client(quick: BackgroundSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with sdk(quick.base_url) as client:
        yield client


@pytest.fixture
async def slow_client(make_simulator: MakeSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with sdk(make_simulator(batch_delay_s=NEVER_ENDS_S).base_url) as client:
        yield client


class TestLifecycle:
    async def test_a_batch_ends_with_a_result_per_request(
        self, quick: BackgroundSimulator, quick_client: anthropic.AsyncAnthropic
    ) -> None:
        created = await quick_client.messages.batches.create(
            requests=[request("ok"), request("bad", max_tokens=0), request("busy", "[[sim:fault=overloaded]]")]
        )
        batch = await ended(quick_client, created.id)
        results = {
            result.custom_id: result.result async for result in await quick_client.messages.batches.results(batch.id)
        }

        assert created.processing_status == "in_progress"
        assert created.request_counts.processing == 3
        assert created.results_url is None
        assert batch.processing_status == "ended"
        assert batch.ended_at is not None
        assert batch.results_url == f"{quick.base_url}/v1/messages/batches/{batch.id}/results"
        assert (batch.request_counts.succeeded, batch.request_counts.errored, batch.request_counts.processing) == (
            1,
            2,
            0,
        )
        assert results["ok"].type == "succeeded"
        assert results["bad"].type == "errored"
        assert results["bad"].error.error.message == "max_tokens: Input should be greater than or equal to 1"
        assert results["busy"].type == "errored"
        assert results["busy"].error.error.type == "overloaded_error"

    async def test_a_result_is_what_messages_would_answer(self, quick_client: anthropic.AsyncAnthropic) -> None:
        direct = await quick_client.messages.create(model=MODEL, max_tokens=32, messages=user("Same question"))
        created = await quick_client.messages.batches.create(requests=[request("same", "Same question")])
        await ended(quick_client, created.id)
        (result,) = [line async for line in await quick_client.messages.batches.results(created.id)]

        assert result.result.type == "succeeded"
        message = result.result.message
        assert message.content == direct.content
        assert message.usage.input_tokens == direct.usage.input_tokens
        assert message.usage.output_tokens == direct.usage.output_tokens

    async def test_results_are_jsonl(self, quick: BackgroundSimulator, quick_client: anthropic.AsyncAnthropic) -> None:
        created = await quick_client.messages.batches.create(requests=[request("a"), request("b")])
        batch = await ended(quick_client, created.id)
        async with raw_http(quick.base_url) as http:
            response = await http.get(f"/v1/messages/batches/{batch.id}/results")

        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-jsonl"
        lines = response.text.splitlines()
        assert [line.startswith('{"custom_id":') for line in lines] == [True, True]

    async def test_list_pages_newest_first(self, quick_client: anthropic.AsyncAnthropic) -> None:
        first = await quick_client.messages.batches.create(requests=[request("a")])
        second = await quick_client.messages.batches.create(requests=[request("b")])
        listed = [batch.id async for batch in await quick_client.messages.batches.list(limit=1)]

        assert listed == [second.id, first.id]

    async def test_delete_once_ended(self, quick_client: anthropic.AsyncAnthropic) -> None:
        created = await quick_client.messages.batches.create(requests=[request("a")])
        await ended(quick_client, created.id)
        deleted = await quick_client.messages.batches.delete(created.id)

        assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            await quick_client.messages.batches.retrieve(created.id)


class TestInProgress:
    async def test_cancel(self, slow_client: anthropic.AsyncAnthropic) -> None:
        created = await slow_client.messages.batches.create(requests=[request("a"), request("b")])
        canceling = await slow_client.messages.batches.cancel(created.id)
        batch = await ended(slow_client, created.id)
        results = [line.result.type async for line in await slow_client.messages.batches.results(created.id)]

        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        assert batch.processing_status == "ended"
        assert batch.request_counts.canceled == 2
        assert results == ["canceled", "canceled"]

    async def test_delete_is_refused_before_the_end(self, slow_client: anthropic.AsyncAnthropic) -> None:
        created = await slow_client.messages.batches.create(requests=[request("a")])

        with pytest.raises(anthropic.BadRequestError):
            await slow_client.messages.batches.delete(created.id)
        assert (await slow_client.messages.batches.retrieve(created.id)).processing_status == "in_progress"

    async def test_results_are_not_there_before_the_end(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator(batch_delay_s=NEVER_ENDS_S)
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            created = await client.messages.batches.create(requests=[request("a")])
            response = await http.get(f"/v1/messages/batches/{created.id}/results")

        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


class TestRefusals:
    async def test_unknown_batch_is_a_404(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve("msgbatch_01nothing")

    @pytest.mark.parametrize(
        ("requests", "message"),
        [
            ([], "requests: List should have at least 1 item"),
            ([{"params": {}}], "requests.0.custom_id: Field required"),
            ([{"custom_id": "a b", "params": {}}], "requests.0.custom_id: String should match pattern"),
            ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "requests.1.custom_id: Duplicate"),
            ([{"custom_id": "a"}], "requests.0.params: Field required"),
        ],
    )
    async def test_bad_bodies(self, http: httpx.AsyncClient, requests: list[object], message: str) -> None:
        response = await http.post("/v1/messages/batches", json={"requests": requests})

        assert response.status_code == 400
        assert message in response.json()["error"]["message"]
