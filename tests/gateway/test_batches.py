"""Message Batches through the gateway, with the official Python SDK, against the real simulator: each call's answer
compared with the same call made straight to the simulator; per-key isolation (with Redis and without); results_url
on the gateway; results streamed and their usage counted once; Anthropic's errors relayed as they came."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from prometheus_client import REGISTRY

from claude_gateway import pricing
from claude_gateway.auth import short_name
from claude_gateway.batch_usage import add
from claude_gateway.simulator import BackgroundSimulator, SimulatorConfig
from claude_gateway.usage import Usage
from tests.conftest import CLIENT_KEY, OTHER_KEY, Gateway
from tests.support.servers import Process

MODEL = "claude-sonnet-4-6"
# A batch of the session simulator ends a second after it is created.
BATCH_END_TIMEOUT_S = 30.0
# Fields that differ between two batches made of the same requests.
PER_BATCH_FIELDS = ("id", "created_at", "expires_at", "ended_at", "cancel_initiated_at", "results_url")


def params(text: str, max_tokens: int = 8) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


REQUESTS = [
    {"custom_id": "first", "params": params("Hello there", 8)},
    {"custom_id": "second", "params": params("Tell me a story", 12)},
]


@pytest.fixture(params=["in-process", "redis"])
def gateway(request: pytest.FixtureRequest, make_gateway: Callable[..., Gateway]) -> Gateway:
    """A gateway recording owners in this process, or in Redis."""
    if request.param == "redis":
        return make_gateway(redis_url=request.getfixturevalue("redis_url"))
    return make_gateway()


def sdk(base_url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with sdk(gateway.url, CLIENT_KEY) as sdk_client:
        yield sdk_client


@pytest.fixture
def other(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with sdk(gateway.url, OTHER_KEY) as sdk_client:
        yield sdk_client


@pytest.fixture
def direct(simulator: Process) -> Iterator[anthropic.Anthropic]:
    with sdk(simulator.url, "sk-ant-test-upstream-0d9c4b") as sdk_client:
        yield sdk_client


def ended(client: anthropic.Anthropic, batch_id: str) -> anthropic.types.messages.MessageBatch:
    deadline = time.monotonic() + BATCH_END_TIMEOUT_S
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.processing_status}"
        time.sleep(0.05)


def comparable(batch: Any) -> dict[str, Any]:
    data: dict[str, Any] = batch.model_dump(mode="json")
    for name in PER_BATCH_FIELDS:
        data.pop(name, None)
    return data


def comparable_results(results: list[Any]) -> list[dict[str, Any]]:
    lines = []
    for line in results:
        data: dict[str, Any] = line.model_dump(mode="json")
        message = data["result"].get("message")
        if message is not None:
            message.pop("id")
        lines.append(data)
    return lines


def tokens(client_name: str, direction: str) -> float:
    labels = {"model": MODEL, "direction": direction, "client": client_name}
    return REGISTRY.get_sample_value("claude_gateway_tokens_total", labels) or 0.0


def cost(client_name: str) -> float:
    labels = {"model": MODEL, "client": client_name}
    return REGISTRY.get_sample_value("claude_gateway_cost_usd_total", labels) or 0.0


class TestSameAnswersAsTheSimulator:
    def test_create_retrieve_results_delete(
        self, gateway: Gateway, client: anthropic.Anthropic, direct: anthropic.Anthropic
    ) -> None:
        through = client.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
        straight = direct.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
        assert comparable(through) == comparable(straight)
        assert through.processing_status == "in_progress"

        through_ended, straight_ended = ended(client, through.id), ended(direct, straight.id)
        assert comparable(through_ended) == comparable(straight_ended)
        assert through_ended.request_counts.succeeded == 2

        through_results = list(client.messages.batches.results(through.id))
        straight_results = list(direct.messages.batches.results(straight.id))
        assert comparable_results(through_results) == comparable_results(straight_results)
        assert [line.custom_id for line in through_results] == ["first", "second"]

        deleted = client.messages.batches.delete(through.id)
        assert deleted.model_dump() == {"id": through.id, "type": "message_batch_deleted"}
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(through.id)

    def test_cancel(self, client: anthropic.Anthropic, direct: anthropic.Anthropic) -> None:
        through = client.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
        straight = direct.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]

        through_canceled = client.messages.batches.cancel(through.id)
        straight_canceled = direct.messages.batches.cancel(straight.id)
        assert comparable(through_canceled) == comparable(straight_canceled)
        assert through_canceled.processing_status == "canceling"

        results = list(client.messages.batches.results(ended(client, through.id).id))
        assert [line.result.type for line in results] == ["canceled", "canceled"]

    def test_an_upstream_refusal_is_relayed_as_it_came(
        self, client: anthropic.Anthropic, direct: anthropic.Anthropic
    ) -> None:
        duplicate = [REQUESTS[0], REQUESTS[0]]
        with pytest.raises(anthropic.BadRequestError) as through:
            client.messages.batches.create(requests=duplicate)  # type: ignore[arg-type]
        with pytest.raises(anthropic.BadRequestError) as straight:
            direct.messages.batches.create(requests=duplicate)  # type: ignore[arg-type]
        assert isinstance(through.value.body, dict)
        assert isinstance(straight.value.body, dict)
        assert through.value.body["error"] == straight.value.body["error"]
        assert "Duplicate custom_id" in through.value.body["error"]["message"]
        # Anthropic's request id, not the gateway's own.
        assert through.value.request_id is not None
        assert through.value.request_id.startswith("req_")

    def test_results_before_the_end_are_refused_by_anthropic_not_the_gateway(
        self, client: anthropic.Anthropic, gateway: Gateway
    ) -> None:
        batch = client.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
        answer = httpx.get(
            f"{gateway.url}/v1/messages/batches/{batch.id}/results", headers=gateway.headers(), timeout=10
        )
        assert answer.status_code == 400
        assert answer.headers["request-id"].startswith("req_")
        assert answer.json()["error"]["message"] == (
            f"Batch {batch.id} has not finished processing; its results are not available yet."
        )


class TestResultsThroughTheGateway:
    def test_results_url_points_at_the_gateway(self, client: anthropic.Anthropic, gateway: Gateway) -> None:
        batch = ended(client, client.messages.batches.create(requests=REQUESTS).id)  # type: ignore[arg-type]
        assert batch.results_url == f"{gateway.url}/v1/messages/batches/{batch.id}/results"
        listed = [listed for listed in client.messages.batches.list() if listed.id == batch.id]
        assert [item.results_url for item in listed] == [batch.results_url]

    def test_results_url_follows_the_host_the_client_named(self, client: anthropic.Anthropic, gateway: Gateway) -> None:
        batch = ended(client, client.messages.batches.create(requests=REQUESTS).id)  # type: ignore[arg-type]
        port = gateway.url.rsplit(":", 1)[1]
        answer = httpx.get(
            f"http://localhost:{port}/v1/messages/batches/{batch.id}", headers=gateway.headers(), timeout=10
        )
        assert answer.json()["results_url"] == f"http://localhost:{port}/v1/messages/batches/{batch.id}/results"

    def test_results_usage_is_counted_once_at_the_batch_price(self, client: anthropic.Anthropic) -> None:
        name = short_name(CLIENT_KEY)
        batch = ended(client, client.messages.batches.create(requests=REQUESTS).id)  # type: ignore[arg-type]
        output_before, cost_before = tokens(name, "output"), cost(name)

        results = list(client.messages.batches.results(batch.id))
        spent = Usage()
        for line in results:
            assert line.result.type == "succeeded"
            spent = add(spent, Usage.from_wire(line.result.message.usage))
        assert spent.output == 8 + 12
        assert tokens(name, "output") - output_before == spent.output
        prices = pricing.active()
        full, discounted = prices.cost(MODEL, spent), prices.cost(MODEL, spent, batch=True)
        assert full is not None
        assert discounted is not None
        assert discounted < full
        assert cost(name) - cost_before == pytest.approx(float(discounted))

        list(client.messages.batches.results(batch.id))
        assert tokens(name, "output") - output_before == spent.output  # a second download is not counted again
        assert cost(name) - cost_before == pytest.approx(float(discounted))

    def test_results_stream_as_json_lines(self, client: anthropic.Anthropic, gateway: Gateway) -> None:
        batch = ended(client, client.messages.batches.create(requests=REQUESTS).id)  # type: ignore[arg-type]
        with httpx.stream("GET", batch.results_url or "", headers=gateway.headers(), timeout=10) as answer:
            lines = list(answer.iter_lines())
        assert answer.status_code == 200
        assert answer.headers["request-id"].startswith("req_")
        assert [line.startswith('{"custom_id":') for line in lines if line] == [True, True]


class TestIsolation:
    def test_another_key_gets_404_and_does_not_list_it(
        self, client: anthropic.Anthropic, other: anthropic.Anthropic
    ) -> None:
        batch = ended(client, client.messages.batches.create(requests=REQUESTS).id)  # type: ignore[arg-type]
        theirs = other.messages.batches.create(requests=REQUESTS[:1])  # type: ignore[arg-type]

        for attempt in (
            lambda: other.messages.batches.retrieve(batch.id),
            lambda: other.messages.batches.cancel(batch.id),
            lambda: other.messages.batches.delete(batch.id),
            lambda: list(other.messages.batches.results(batch.id)),
        ):
            with pytest.raises(anthropic.NotFoundError) as refused:
                attempt()
            assert isinstance(refused.value.body, dict)
            assert refused.value.body["error"] == {
                "type": "not_found_error",
                "message": f"Message batch not found: {batch.id}",
            }
        assert batch.id not in [listed.id for listed in other.messages.batches.list()]
        assert theirs.id in [listed.id for listed in other.messages.batches.list()]
        assert theirs.id not in [listed.id for listed in client.messages.batches.list()]
        # Still there for its owner.
        assert client.messages.batches.retrieve(batch.id).id == batch.id

    def test_a_batch_made_outside_the_gateway_is_nobodys(
        self, client: anthropic.Anthropic, direct: anthropic.Anthropic
    ) -> None:
        outside = direct.messages.batches.create(requests=REQUESTS[:1])  # type: ignore[arg-type]
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(outside.id)
        assert outside.id not in [listed.id for listed in client.messages.batches.list()]

    def test_ownership_is_shared_by_gateways_on_one_redis(
        self, make_gateway: Callable[..., Gateway], redis_url: str
    ) -> None:
        first, second = make_gateway(redis_url=redis_url), make_gateway(redis_url=redis_url)
        with sdk(first.url, CLIENT_KEY) as on_first, sdk(second.url, CLIENT_KEY) as on_second:
            batch = on_first.messages.batches.create(requests=REQUESTS[:1])  # type: ignore[arg-type]
            assert on_second.messages.batches.retrieve(batch.id).id == batch.id
        with sdk(second.url, OTHER_KEY) as other_on_second, pytest.raises(anthropic.NotFoundError):
            other_on_second.messages.batches.retrieve(batch.id)


class TestListing:
    def test_pages_hold_only_the_keys_batches_with_honest_fields(
        self, client: anthropic.Anthropic, other: anthropic.Anthropic, gateway: Gateway
    ) -> None:
        mine: list[str] = []
        for _ in range(3):
            mine.append(client.messages.batches.create(requests=REQUESTS[:1]).id)  # type: ignore[arg-type]
            other.messages.batches.create(requests=REQUESTS[:1])  # type: ignore[arg-type]
        newest_first = list(reversed(mine))

        # The SDK's auto-pagination, one item a page: the key's batches, newest first, each once.
        assert [batch.id for batch in client.messages.batches.list(limit=1)] == newest_first
        assert [batch.id for batch in client.messages.batches.list(limit=1000)] == newest_first

        # Page by page: never more than `limit`, never another key's id, ids naming the page's own ends.
        seen: list[str] = []
        query: dict[str, Any] = {"limit": 2}
        for _ in range(10):
            page = httpx.get(
                f"{gateway.url}/v1/messages/batches", params=query, headers=gateway.headers(), timeout=10
            ).json()
            ids = [batch["id"] for batch in page["data"]]
            assert 1 <= len(ids) <= 2 or (not ids and not page["has_more"])
            assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))
            seen.extend(ids)
            if not page["has_more"]:
                break
            query = {"limit": 2, "after_id": page["last_id"]}
        assert seen == newest_first

        back = httpx.get(
            f"{gateway.url}/v1/messages/batches",
            params={"limit": 1, "before_id": newest_first[2]},
            headers=gateway.headers(),
            timeout=10,
        ).json()
        assert [batch["id"] for batch in back["data"]] == [newest_first[1]]

    def test_a_bad_limit_is_anthropics_to_refuse(self, gateway: Gateway, simulator: Process) -> None:
        through = httpx.get(
            f"{gateway.url}/v1/messages/batches", params={"limit": 0}, headers=gateway.headers(), timeout=10
        )
        straight = httpx.get(
            f"{simulator.url}/v1/messages/batches",
            params={"limit": 0},
            headers={"x-api-key": "sk-ant-direct", "anthropic-version": "2023-06-01"},
            timeout=10,
        )
        assert through.status_code == straight.status_code == 400
        assert through.json()["error"] == straight.json()["error"]


class TestGatewayRefusals:
    def test_missing_and_unknown_keys(self, gateway: Gateway) -> None:
        missing = httpx.get(f"{gateway.url}/v1/messages/batches", timeout=10)
        unknown = httpx.get(f"{gateway.url}/v1/messages/batches", headers={"x-api-key": "nope"}, timeout=10)
        assert (missing.status_code, missing.json()["error"]["type"]) == (401, "authentication_error")
        assert (unknown.status_code, unknown.json()["error"]["type"]) == (403, "permission_error")

    def test_request_limit_applies(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(rate_limit="2/minute")
        # A request for a batch that is not the key's counts too (probing ids is not free).
        paths = ["/v1/messages/batches", "/v1/messages/batches/msgbatch_nobodys", "/v1/messages/batches"]
        answers = [httpx.get(f"{gateway.url}{path}", headers=gateway.headers(), timeout=10) for path in paths]
        assert [answer.status_code for answer in answers] == [200, 404, 429]
        assert answers[2].json()["error"]["type"] == "rate_limit_error"
        assert answers[0].headers["x-ratelimit-limit"] == "2"

    def test_metered_by_route_template(self, client: anthropic.Anthropic) -> None:
        def count() -> float:
            labels = {"route": "/v1/messages/batches/{batch_id}", "method": "GET", "status": "404"}
            return REGISTRY.get_sample_value("claude_gateway_http_requests_total", labels) or 0.0

        before = count()
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve("msgbatch_nobodys")
        deadline = time.monotonic() + 5
        while count() == before and time.monotonic() < deadline:
            time.sleep(0.01)  # counted just after the last byte
        assert count() == before + 1

    def test_an_upstream_401_is_an_internal_configuration_error(self, make_gateway: Callable[..., Gateway]) -> None:
        with BackgroundSimulator(SimulatorConfig(api_key="sk-ant-only-this-one")) as strict:
            gateway = make_gateway(anthropic_base_url=strict.base_url)
            with sdk(gateway.url, CLIENT_KEY) as client, pytest.raises(anthropic.InternalServerError) as failed:
                client.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
        assert failed.value.status_code == 500
        assert isinstance(failed.value.body, dict)
        assert failed.value.body["error"] == {"type": "api_error", "message": "Internal configuration error"}
