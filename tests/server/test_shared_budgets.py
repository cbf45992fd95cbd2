"""A spend budget shared through one Redis by two production servers with two workers each: 100 concurrent requests
of mixed sizes never take it past its budget by more than the documented reservation slack, and every request is
served until the budget runs out; usage and /metrics agree; another key goes on being served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from claude_gateway.admission.lease import estimate_input_tokens
from tests.server.conftest import ServeFactory
from tests.support.servers import Process

MODEL = "claude-haiku-4-5"
# Claude Haiku 4.5 on Anthropic's pricing page, USD per token (written out, not read from the table under test).
INPUT_USD, OUTPUT_USD = 1e-6, 5e-6
BUDGET_USD = 0.05
RESERVE_OUTPUT = 200
# Mixed sizes: half within the output reservation, half past it (those may settle into debt).
SIZES = (60, 150, 400, 800)
REQUESTS = 100
DEADLINE_S = 30.0


def body(i: int) -> dict[str, Any]:
    size = SIZES[i % len(SIZES)]
    return {
        "model": MODEL,
        "max_tokens": size,
        "messages": [{"role": "user", "content": f"request {i} [[sim:tokens={size}]]"}],
    }


def reservation_usd(request: dict[str, Any]) -> float:
    """What the gateway reserves for `request` (its input estimate and min(max_tokens, TOKEN_RESERVE_OUTPUT))."""
    chars = len(httpx.Request("POST", "/", json=request).content)
    output: int = min(request["max_tokens"], RESERVE_OUTPUT)
    return estimate_input_tokens(chars) * INPUT_USD + output * OUTPUT_USD


def metric_sum(expositions: Sequence[str], name: str, **labels: str) -> float:
    total = 0.0
    for text in expositions:
        for family in text_string_to_metric_families(text):
            for found in family.samples:
                if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                    total += float(found.value)
    return total


async def test_a_budget_holds_across_two_servers_within_the_reservation_slack(
    serve: ServeFactory, redis_url: str, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"name": "capped", "key": "cgw-test-capped-6a1f", "budget_usd": {"day": BUDGET_USD}},
                    {"name": "free", "key": "cgw-test-free-0b7e"},
                ]
            }
        )
    )
    env = {"REDIS_URL": redis_url, "API_KEYS_FILE": str(keys_file), "TOKEN_RESERVE_OUTPUT": str(RESERVE_OUTPUT)}
    servers: list[Process] = [serve(workers=2, **env), serve(workers=2, **env)]
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    clients = [
        httpx.AsyncClient(base_url=s.url, headers={"x-api-key": "cgw-test-capped-6a1f"}, limits=no_reuse, timeout=60)
        for s in servers
    ]
    try:
        answers = await asyncio.gather(*(clients[i % 2].post("/v1/messages", json=body(i)) for i in range(REQUESTS)))
        free = await clients[0].post("/v1/messages", json=body(0), headers={"x-api-key": "cgw-test-free-0b7e"})
        deadline = time.monotonic() + DEADLINE_S
        while True:  # the last settlements land just after their answers
            usage = (await clients[1].get("/v1/gateway/usage")).json()["windows"]["day"]
            expositions = [
                (await client.get(server.metrics_url + "/metrics")).text
                for client, server in zip(clients, servers, strict=True)
            ]
            cost = metric_sum(expositions, "claude_gateway_cost_usd_total", client="capped")
            if abs(usage["spent_usd"] - cost) < 1e-5 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        for client in clients:
            await client.aclose()

    statuses = [answer.status_code for answer in answers]
    served = [i for i, answer in enumerate(answers) if answer.status_code == 200]
    assert set(statuses) == {200, 429}, statuses  # nothing failed otherwise, and the budget did run out
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["message"].startswith("Daily budget of $0.05 for this key is spent")
            assert answer.headers["x-should-retry"] == "false"
    assert free.status_code == 200  # another key is not refused

    # What was spent, from the simulator's usage as the answers report it, priced by hand.
    spent = sum(
        answers[i].json()["usage"]["input_tokens"] * INPUT_USD
        + answers[i].json()["usage"]["output_tokens"] * OUTPUT_USD
        for i in served
    )
    assert abs(usage["spent_usd"] - spent) < 1e-5  # the usage endpoint, from either server
    assert abs(cost - spent) < 1e-5  # /metrics agree, summed over both servers
    assert metric_sum(expositions, "claude_gateway_tokens_total", client="capped", direction="output") == sum(
        answers[i].json()["usage"]["output_tokens"] for i in served
    )

    # The documented slack (README, "Reservations"): at most n x (max_tokens - TOKEN_RESERVE_OUTPUT) output tokens
    # past the budget, n being the requests served; nothing else can overrun (the input estimate is an upper bound).
    slack = sum(max(0, body(i)["max_tokens"] - RESERVE_OUTPUT) * OUTPUT_USD for i in served)
    assert spent <= BUDGET_USD + slack + 1e-6

    # Served until the budget ran out: what is left cannot hold the reservation of the request last refused, give or
    # take the input over-estimates refunded since (an estimate counts the JSON, the simulator only the text).
    refunds = sum(
        reservation_usd(body(i))
        - min(body(i)["max_tokens"], RESERVE_OUTPUT) * OUTPUT_USD
        - answers[i].json()["usage"]["input_tokens"] * INPUT_USD
        for i in served
    )
    largest_refused = max(reservation_usd(body(i)) for i, answer in enumerate(answers) if answer.status_code == 429)
    assert usage["remaining_usd"] < largest_refused + refunds
