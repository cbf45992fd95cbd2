"""Spend budgets and reservations over HTTP, against the simulator: a key past its budget is refused (Anthropic's
shape on /v1, the seed's on /chat; the official SDK does not retry) while another key is served; a reservation holds
min(max_tokens, TOKEN_RESERVE_OUTPUT) and a window in debt makes the next request wait; the usage endpoint agrees
with /metrics and its admin view is an admin key's only; /analyze reserves its planned calls and settles them."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from claude_gateway.admission.ratelimit.spend import current_windows
from tests.conftest import Gateway
from tests.support.servers import Process, free_port, start_command

MakeGateway = Callable[..., Gateway]
HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-6"
ADMIN_KEY = "cgw-test-admin-93be0d"
# Anything a test waits for (a settlement after a stream's last byte, a job) comes well within this.
DEADLINE_S = 30.0


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


class Keys:
    """A keys file of fresh client names (so this test's metric series are its own) and their keys."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []

    def add(self, **fields: Any) -> tuple[str, str]:
        """A new client (name, key) with `fields` (budget_usd, token_rate_limit, ...)."""
        name = f"t-{uuid.uuid4().hex[:10]}"
        key = f"cgw-test-{uuid.uuid4().hex}"
        self.entries.append({"name": name, "key": key, **fields})
        self.path.write_text(yaml.safe_dump({"keys": self.entries}))
        return name, key


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.yaml")


def start(
    make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest, **settings: Any
) -> Gateway:
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    return make_gateway(api_keys_file=str(keys.path), redis_url=redis_url, **settings)


def message(model: str = HAIKU, max_tokens: int = 50, tokens: int = 50, text: str = "hi") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"{text} [[sim:tokens={tokens}]]"}],
    }


async def sim_requests(simulator: Process) -> int:
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        return int((await http.get("/_sim/stats")).json()["requests"])


def metric(text: str, name: str, **labels: str) -> float:
    """One series' value in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


async def settled_metric(http: httpx.AsyncClient, url: str, name: str, expected: float, **labels: str) -> float:
    """The metric once it has reached `expected` (the middleware counts a request after its last byte), or as it
    stands after a few seconds; the caller asserts on it. (The SDK's retries, if any, all ran before it raised.)"""
    deadline = time.monotonic() + 5
    value = metric((await http.get(url)).text, name, **labels)
    while value < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        value = metric((await http.get(url)).text, name, **labels)
    return value


def seconds_to_midnight() -> float:
    return current_windows()[0].ends_at_s - datetime.now(UTC).timestamp()


class TestBudgetRefusal:
    """A key whose daily budget covers one small Haiku call and not two."""

    BUDGET = {"day": 0.0005}

    async def test_a_key_past_its_budget_is_refused_while_another_is_not(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        _, spender = keys.add(budget_usd=self.BUDGET)
        _, other = keys.add(budget_usd=self.BUDGET)
        gateway = start(make_gateway, keys, backend, request)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            first = await http.post("/v1/messages", json=message(), headers={"x-api-key": spender})
            # The reset is the next UTC midnight: Retry-After counts the whole seconds to it from when it was
            # written, some instant between these two readings.
            left_before = seconds_to_midnight()
            refused = await http.post("/v1/messages", json=message(), headers={"x-api-key": spender})
            left_after = seconds_to_midnight()
            served = await http.post("/v1/messages", json=message(), headers={"x-api-key": other})
        assert first.status_code == 200
        assert served.status_code == 200
        assert refused.status_code == 429
        day = current_windows()[0]
        assert refused.json()["type"] == "error"
        assert refused.json()["error"] == {
            "type": "rate_limit_error",
            "message": f"Daily budget of $0.0005 for this key is spent; it resets at {day.resets_at_text}",
        }
        assert refused.headers["x-should-retry"] == "false"
        assert math.floor(left_after) <= int(refused.headers["retry-after"]) <= math.ceil(left_before) + 1

    async def test_chat_refuses_in_the_seed_shape(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        _, key = keys.add(budget_usd=self.BUDGET)
        gateway = start(make_gateway, keys, backend, request)
        body = {"message": "hi [[sim:tokens=50]]", "model": HAIKU, "max_tokens": 50}
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            assert (await http.post("/chat", json=body)).status_code == 200
            refused = await http.post("/chat", json=body)
        assert refused.status_code == 429
        assert refused.json()["detail"].startswith("Daily budget of $0.0005 for this key is spent; it resets at ")
        assert refused.headers["x-should-retry"] == "false"

    async def test_the_sdk_raises_rate_limit_error_and_does_not_retry(
        self,
        make_gateway: MakeGateway,
        keys: Keys,
        backend: str,
        request: pytest.FixtureRequest,
        simulator: Process,
    ) -> None:
        name, key = keys.add(budget_usd=self.BUDGET)
        gateway = start(make_gateway, keys, backend, request)
        client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=2)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            await client.messages.create(**message())
            scrape = gateway.metrics_url + "/metrics"
            before = metric(
                (await http.get(scrape)).text, "claude_gateway_http_requests_total", route="/v1/messages", status="429"
            )
            upstream_before = await sim_requests(simulator)
            with pytest.raises(anthropic.RateLimitError) as refused:
                await client.messages.create(**message())
            after = await settled_metric(
                http, scrape, "claude_gateway_http_requests_total", before + 1, route="/v1/messages", status="429"
            )
            refusals = metric(
                (await http.get(scrape)).text, "claude_gateway_rate_limited_total", client=name, limit="budget"
            )
        await client.close()
        assert "Daily budget of $0.0005 for this key is spent" in refused.value.message
        assert after - before == 1  # one request reached the gateway: the SDK did not retry
        assert refusals == 1
        assert await sim_requests(simulator) == upstream_before  # and nothing reached Anthropic


class TestReservations:
    async def test_an_agent_client_max_tokens_reserves_only_token_reserve_output(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        """Claude Code asks for max_tokens 128 000; a 20 000-token-a-minute key still serves it, holding 4 096."""
        _, key = keys.add(token_rate_limit="20000/minute")
        gateway = start(make_gateway, keys, backend, request, max_tokens_limit=128_000)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": key}) as http:
            answer = await http.post("/v1/messages", json=message(max_tokens=128_000, tokens=30))
            used = answer.json()["usage"]
            follow = await http.post("/v1/messages", json=message(max_tokens=128_000, tokens=30))
        assert answer.status_code == 200
        body_tokens = len(httpx.Request("POST", "/", json=message(max_tokens=128_000, tokens=30)).content) // 4 + 1
        # The follow-up saw the first one settled to its real use, and its own reservation held.
        assert int(follow.headers["x-ratelimit-remaining-tokens"]) == (
            20_000 - used["input_tokens"] - used["output_tokens"] - body_tokens - 4096
        )

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_window_in_debt_makes_the_next_request_wait(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest, stream: bool
    ) -> None:
        """Reserving 20 output tokens, a call that writes 400 (whole or streamed) takes a 300-token window into debt:
        the next request is refused until the window resets, then served."""
        _, key = keys.add(token_rate_limit="300/2 second")
        gateway = start(make_gateway, keys, backend, request, token_reserve_output=20)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": key}) as http:
            over = await http.post("/v1/messages", json={**message(max_tokens=1000, tokens=400), "stream": stream})
            waiting = await http.post("/v1/messages", json=message(max_tokens=10, tokens=1))
            deadline = time.monotonic() + DEADLINE_S
            while (later := await http.post("/v1/messages", json=message(max_tokens=10, tokens=1))).status_code == 429:
                assert time.monotonic() < deadline, "the window in debt never reset"
                await asyncio.sleep(0.1)
        assert over.status_code == 200
        assert '"output_tokens":400' in over.text.replace(" ", "")
        assert waiting.status_code == 429
        assert waiting.json()["error"]["message"].startswith("Token rate limit exceeded for this key")
        assert waiting.headers["x-ratelimit-remaining-tokens"] == "0"
        assert int(waiting.headers["retry-after"]) <= 2
        assert later.status_code == 200

    async def test_a_budget_goes_into_debt_past_its_reservation(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        """Reserving 10 output tokens of Sonnet ($0.00015), a call that writes 2 000 ($0.03) is served and charged
        in full: the $0.01 budget is then in debt and refuses."""
        _, key = keys.add(budget_usd={"day": 0.01})
        gateway = start(make_gateway, keys, backend, request, token_reserve_output=10)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": key}) as http:
            over = await http.post("/v1/messages", json=message(SONNET, max_tokens=4000, tokens=2000))
            refused = await http.post("/v1/messages", json=message(SONNET, max_tokens=10, tokens=1))
            usage = (await http.get("/v1/gateway/usage")).json()
        assert over.status_code == 200
        assert refused.status_code == 429
        day = usage["windows"]["day"]
        assert day["spent_usd"] == pytest.approx(float(over.headers["x-gateway-cost-usd"]))
        assert day["spent_usd"] > 0.01
        assert day["remaining_usd"] == 0


class TestUsageEndpoint:
    async def test_usage_agrees_with_metrics(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        name, key = keys.add(budget_usd={"day": 5, "month": 50})
        gateway = start(make_gateway, keys, backend, request)
        client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0)
        await client.messages.create(**message(HAIKU, max_tokens=100, tokens=60))
        async with client.messages.stream(**message(SONNET, max_tokens=100, tokens=80)) as stream:
            await stream.get_final_message()
        await client.close()
        async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http:
            chat = await http.post("/chat", json={"message": "hello [[sim:tokens=5]]", "model": HAIKU})
            assert chat.status_code == 200
            deadline = time.monotonic() + DEADLINE_S
            while True:  # a stream settles just after its last byte
                usage = (await http.get("/v1/gateway/usage")).json()
                exposition = (await http.get(gateway.metrics_url + "/metrics")).text
                if usage["windows"]["day"]["total"]["requests"] == 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        assert usage["client"] == name
        directions = {
            "input": "input_tokens",
            "output": "output_tokens",
            "cache_read": "cache_read_input_tokens",
            "cache_write": "cache_creation_input_tokens",
        }
        for window in ("day", "month"):
            found = usage["windows"][window]
            assert set(found["models"]) == {HAIKU, SONNET}
            for model, counts in found["models"].items():
                for direction, field in directions.items():
                    expected = metric(
                        exposition, "claude_gateway_tokens_total", client=name, model=model, direction=direction
                    )
                    assert counts[field] == expected, (window, model, direction)
                cost = metric(exposition, "claude_gateway_cost_usd_total", client=name, model=model)
                assert counts["cost_usd"] == pytest.approx(cost, abs=1e-6)
            assert found["models"][HAIKU]["requests"] == 2
            assert found["spent_usd"] == pytest.approx(sum(m["cost_usd"] for m in found["models"].values()))
        day, month = usage["windows"]["day"], usage["windows"]["month"]
        assert (day["budget_usd"], month["budget_usd"]) == (5, 50)
        assert day["remaining_usd"] == pytest.approx(5 - day["spent_usd"], abs=2e-6)
        assert day["resets_at"] == current_windows()[0].resets_at_text

    async def test_each_whole_answer_is_in_the_next_read_of_usage(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        """A whole answer settles as it is sent, not before: still, a keep-alive client's read of its usage right
        after each answer finds it, every time."""
        _, key = keys.add(budget_usd={"day": 5})
        gateway = start(make_gateway, keys, backend, request)
        found = []
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": key}) as http:
            for i in range(1, 21):
                route, body = ("/chat", {"message": "hi [[sim:tokens=3]]"}) if i % 2 else ("/v1/messages", message())
                assert (await http.post(route, json=body)).status_code == 200
                found.append((await http.get("/v1/gateway/usage")).json()["windows"]["day"]["total"]["requests"])
        assert found == list(range(1, 21))

    async def test_the_admin_view_needs_an_admin_key(
        self, make_gateway: MakeGateway, keys: Keys, backend: str, request: pytest.FixtureRequest
    ) -> None:
        first, first_key = keys.add(budget_usd={"day": 1})
        second, second_key = keys.add()
        gateway = start(make_gateway, keys, backend, request, admin_api_keys=ADMIN_KEY)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            for key in (first_key, second_key):
                assert (await http.post("/v1/messages", json=message(), headers={"x-api-key": key})).status_code == 200
            everyone = await http.get("/v1/gateway/usage", params={"all": "true"}, headers={"x-api-key": ADMIN_KEY})
            denied = await http.get("/v1/gateway/usage", params={"all": "true"}, headers={"x-api-key": first_key})
            own = await http.get("/v1/gateway/usage", headers={"x-api-key": second_key})
            anonymous = await http.get("/v1/gateway/usage")
        assert everyone.status_code == 200
        clients = everyone.json()["clients"]
        assert {first, second} <= set(clients)
        assert clients[first]["windows"]["day"]["budget_usd"] == 1
        assert clients[second]["windows"]["day"]["models"][HAIKU]["requests"] == 1
        assert denied.status_code == 403
        assert denied.json()["error"]["type"] == "permission_error"
        assert first not in denied.text
        assert own.json()["client"] == second
        assert first not in own.text
        assert anonymous.status_code == 401
        assert anonymous.json()["type"] == "error"


async def wait_for_task(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        body: dict[str, Any] = (await http.get(f"/analyze/{task_id}")).json()
        if body["status"] != "processing":
            return body
        assert time.monotonic() < deadline, "the job did not end"
        await asyncio.sleep(0.05)


async def wait_for_settled(http: httpx.AsyncClient, requests: int) -> dict[str, Any]:
    """The day's usage once `requests` calls are recorded and the budget holds exactly what they cost."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        day: dict[str, Any] = (await http.get("/v1/gateway/usage")).json()["windows"]["day"]
        settled = day["budget_usd"] - day["remaining_usd"] == pytest.approx(day["spent_usd"], abs=2e-6)
        if day["total"]["requests"] == requests and settled:
            return day
        assert time.monotonic() < deadline, f"the job was not settled: {day}"
        await asyncio.sleep(0.05)


@pytest.fixture
def worker_process(redis_url: str, simulator: Process) -> Iterator[Process]:
    env = {
        "REDIS_URL": redis_url,
        "ANTHROPIC_BASE_URL": simulator.url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "METRICS_ENABLED": "false",
    }
    process = start_command(["worker"], port=free_port(), env=env, wait=False)
    yield process
    process.stop()


class TestAnalyzePaysItsWay:
    async def test_a_job_that_cannot_fit_is_refused_at_once(
        self, make_gateway: MakeGateway, keys: Keys, simulator: Process
    ) -> None:
        """10 000 characters plan ~2 900 tokens and 1 024 of output: more than 3 000 tokens a minute can hold."""
        _, key = keys.add(token_rate_limit="3000/minute")
        gateway = make_gateway(api_keys_file=str(keys.path))
        upstream_before = await sim_requests(simulator)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            refused = await http.post("/analyze", json={"document": "Words and more words. " * 455})
            served = await http.post("/analyze", json={"document": "A short note."})
            await wait_for_task(http, served.json()["task_id"])
        assert refused.status_code == 429
        assert "may use up to" in refused.json()["detail"]
        assert served.status_code == 202
        assert await sim_requests(simulator) == upstream_before + 1  # the refused job never ran

    async def test_a_budget_refuses_a_job_it_cannot_cover(self, make_gateway: MakeGateway, keys: Keys) -> None:
        _, key = keys.add(budget_usd={"day": 0.001})  # a Sonnet summary may write 1 024 tokens: $0.015
        gateway = make_gateway(api_keys_file=str(keys.path))
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            refused = await http.post("/analyze", json={"document": "A short note."})
        assert refused.status_code == 429
        assert "more than this key's daily budget of $0.001" in refused.json()["detail"]

    async def test_an_in_process_job_is_settled_to_what_it_spent(self, make_gateway: MakeGateway, keys: Keys) -> None:
        _, key = keys.add(budget_usd={"day": 1})
        gateway = make_gateway(api_keys_file=str(keys.path))
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            task = (await http.post("/analyze", json={"document": "A report. [[sim:tokens=40]]"})).json()
            assert (await wait_for_task(http, task["task_id"]))["status"] == "complete"
            day = await wait_for_settled(http, requests=1)
        assert day["models"][SONNET]["output_tokens"] == 40
        assert day["spent_usd"] > 0

    async def test_a_cancelled_job_gives_back_what_it_did_not_spend(
        self, make_gateway: MakeGateway, keys: Keys
    ) -> None:
        _, key = keys.add(budget_usd={"day": 1})
        gateway = make_gateway(api_keys_file=str(keys.path))
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            task = (await http.post("/analyze", json={"document": "slow [[sim:ttft_ms=5000]]"})).json()
            held = (await http.get("/v1/gateway/usage")).json()["windows"]["day"]
            assert (await http.delete(f"/analyze/{task['task_id']}")).status_code == 200
            after = (await http.get("/v1/gateway/usage")).json()["windows"]["day"]
        assert held["remaining_usd"] < 1  # the job's planned calls were held
        assert after["remaining_usd"] == 1  # and given back: it spent nothing
        assert after["spent_usd"] == 0

    async def test_a_resubmitted_idempotent_job_holds_once(self, make_gateway: MakeGateway, keys: Keys) -> None:
        _, key = keys.add(budget_usd={"day": 1})
        gateway = make_gateway(api_keys_file=str(keys.path))
        headers = {"X-API-Key": key, "Idempotency-Key": "report-1"}
        body = {"document": "slow [[sim:ttft_ms=5000]]"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
            first = (await http.post("/analyze", json=body)).json()
            held_once = (await http.get("/v1/gateway/usage")).json()["windows"]["day"]["remaining_usd"]
            again = (await http.post("/analyze", json=body)).json()
            held_after = (await http.get("/v1/gateway/usage")).json()["windows"]["day"]["remaining_usd"]
            await http.delete(f"/analyze/{first['task_id']}")
        assert again["task_id"] == first["task_id"]
        assert held_once < 1
        assert held_after == held_once  # the second submission's reservation was given back at once

    async def test_a_failed_job_gives_back_what_it_did_not_spend(self, make_gateway: MakeGateway, keys: Keys) -> None:
        _, key = keys.add(budget_usd={"day": 1})
        gateway = make_gateway(api_keys_file=str(keys.path))
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            task = (await http.post("/analyze", json={"document": "refused [[sim:fault=bad_request]]"})).json()
            assert (await wait_for_task(http, task["task_id"]))["status"] == "failed"
            deadline = time.monotonic() + DEADLINE_S
            while (day := (await http.get("/v1/gateway/usage")).json()["windows"]["day"])["remaining_usd"] < 1:
                assert time.monotonic() < deadline, f"the failed job's reservation was not given back: {day}"
                await asyncio.sleep(0.05)
        assert day["spent_usd"] == 0

    async def test_a_worker_settles_the_job_it_ran(
        self, make_gateway: MakeGateway, keys: Keys, redis_url: str, worker_process: Process
    ) -> None:
        _, key = keys.add(budget_usd={"day": 1}, token_rate_limit="100000/minute")
        gateway = make_gateway(api_keys_file=str(keys.path), redis_url=redis_url)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
            accepted = await http.post("/analyze", json={"document": "A report. [[sim:tokens=30]]"})
            held_tokens = 100_000 - int(accepted.headers["x-ratelimit-remaining-tokens"])
            assert (await wait_for_task(http, accepted.json()["task_id"]))["status"] == "complete"
            day = await wait_for_settled(http, requests=1)
            follow = await http.post("/analyze", json={"document": "x"})
        assert held_tokens > 1024  # its planned call's output, reserved when it was submitted
        assert day["models"][SONNET]["output_tokens"] == 30
        spent_tokens = day["total"]["input_tokens"] + day["total"]["output_tokens"]
        follow_reserved = 100_000 - int(follow.headers["x-ratelimit-remaining-tokens"]) - spent_tokens
        assert 1024 < follow_reserved < held_tokens  # the first job's window holds what it spent, not what it held


def test_without_redis_the_start_up_warning_says_budgets_hold_per_process(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="claude_gateway.web.app"):
        make_gateway()
    warnings = [record.getMessage() for record in caplog.records if record.name == "claude_gateway.web.app"]
    assert any("spend budgets" in text and "this process only" in text for text in warnings), warnings


async def test_a_job_cancelled_on_its_worker_gives_back_its_reservation(
    make_gateway: MakeGateway, keys: Keys, redis_url: str, worker_process: Process, simulator: Process
) -> None:
    _, key = keys.add(budget_usd={"day": 1})
    gateway = make_gateway(api_keys_file=str(keys.path), redis_url=redis_url)
    upstream_before = await sim_requests(simulator)
    async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": key}) as http:
        task = (await http.post("/analyze", json={"document": "slow [[sim:ttft_ms=10000]]"})).json()
        held = (await http.get("/v1/gateway/usage")).json()["windows"]["day"]["remaining_usd"]
        deadline = time.monotonic() + DEADLINE_S
        while await sim_requests(simulator) == upstream_before:  # the worker's call is under way
            assert time.monotonic() < deadline, "the worker never called the simulator"
            await asyncio.sleep(0.05)
        assert (await http.delete(f"/analyze/{task['task_id']}")).status_code == 200
        while (remaining := (await http.get("/v1/gateway/usage")).json()["windows"]["day"]["remaining_usd"]) < 1:
            assert time.monotonic() < deadline, f"the reservation was not given back: {remaining}"
            await asyncio.sleep(0.05)
    assert held < 1
    assert remaining == 1
