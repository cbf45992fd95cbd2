"""A real Prometheus scrapes a gateway and its worker under traffic; every dashboard panel's query returns data.

One test per panel. Panels that need more than the gateway (kube-state-metrics, cAdvisor, a metric the gateway does
not export yet: the generator's `requires=`) cannot have data here and are skipped with that reason; every other
empty panel fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIENT_KEY
from tests.gateway.sse_client import collect, data_events
from tests.observability.dashboard_queries import RULE_FILES, all_panel_queries, panel_requirements
from tests.server.conftest import wait_for_workers
from tests.support.programs import require_program
from tests.support.servers import Process, RedisServer, free_port, start_command, wait_for_port

LIMITED_KEY = "cgw-test-limited-40e1aa"
SCRAPE_INTERVAL = "1s"
# Long enough for rate() over the panels' window to see several scrapes of the traffic below.
TRAFFIC_ROUNDS = 8
EXTRA_ROUNDS = 5
# How long the gateway may take to count a stream after its client has read the last event.
STREAMS_SETTLE_S = 10.0


# The panels' queries as the live Prometheus runs them: Grafana's variables at "All", short windows.
QUERIES = all_panel_queries(rate_interval="30s", time_range="5m", time_range_s=300)
REQUIREMENTS = panel_requirements()
# Each target labelled with its container's name, as the chart's ServiceMonitor labels the pods it scrapes:
# the dashboards count API and worker pods apart by it.
StartPrometheus = Callable[[dict[str, list[str]]], str]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartPrometheus]:
    """`prometheus({container: targets})`: a real Prometheus scraping `targets` every second with our rules loaded."""
    binary = require_program("prometheus", "Debian package prometheus")
    started: list[subprocess.Popen[bytes]] = []
    tmp_path = tmp_path_factory.mktemp("prometheus")

    def start(targets: dict[str, list[str]]) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
                    "rule_files": [str(path) for path in RULE_FILES],
                    "scrape_configs": [
                        {
                            "job_name": "claude-gateway",
                            "static_configs": [
                                {"targets": hosts, "labels": {"container": container}}
                                for container, hosts in targets.items()
                            ],
                        }
                    ],
                }
            )
        )
        arguments = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        started.append(subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=20)


@dataclass
class StreamTally:
    """Streams as the client saw them end: with the done event, or with an error event after their first byte."""

    ok: int = 0
    broken: int = 0

    def add(self, events: list[Any]) -> None:
        final = [event for event in events if isinstance(event, dict) and ("done" in event or "error" in event)]
        if final and "done" in final[-1]:
            self.ok += 1
        elif final:
            self.broken += 1


@dataclass
class LiveRun:
    """What the panels' tests read: the queries left without data, and the streams counted both ways."""

    empty: set[str]
    seen_by_clients: StreamTally
    counted_by_gateway: dict[str, float] = field(default_factory=dict)  # claude_gateway_streams_total by outcome


async def traffic(gateway: str, redis_server: RedisServer, tally: StreamTally) -> None:
    """One round of everything the panels show: answers, streams, failures, limits, jobs, disconnects."""
    async with httpx.AsyncClient(base_url=gateway, headers={"X-API-Key": CLIENT_KEY}, timeout=30) as http:
        message = {"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        cached = [{"type": "text", "text": "Shared preamble. " * 200, "cache_control": {"type": "ephemeral"}}]
        calls = [
            http.post("/chat", json={"message": "hi"}),
            http.post("/v1/messages", json=message),
            http.post("/v1/messages", json={**message, "system": cached}),
            http.post("/chat", json={"message": "[[sim:fault=overloaded]]"}),
            http.post("/chat", json={"message": "[[sim:fault=rate_limit]]"}),
            http.post("/chat", json={"message": "[[sim:fault=server_error]]"}),
            http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": LIMITED_KEY}),
            http.post("/analyze", json={"document": "A document to summarise."}),
            http.post("/analyze", json={"document": "[[sim:fault=bad_request]]"}),
        ]
        await asyncio.gather(*calls)

        async def stream(body: dict[str, str]) -> None:
            async with http.stream("POST", "/chat/stream", json=body) as response:
                events = await collect(response)
                if response.status_code == 200:
                    tally.add(events)

        # More slow streams than upstream slots: some wait past BACKPRESSURE_WAIT_S and get 503.
        await asyncio.gather(
            stream({"message": "[[sim:tokens=20 tokens_per_s=100]]"}),
            stream({"message": "[[sim:fault=midstream_overloaded tokens=10]]"}),
            *(stream({"message": "[[sim:tokens=10 tokens_per_s=20]]"}) for _ in range(6)),
        )
        # Alone, so that backpressure never refuses it: a client that hangs up mid-stream.
        async with http.stream("POST", "/chat/stream", json={"message": "[[sim:tokens=500 tokens_per_s=50]]"}) as r:
            assert r.status_code == 200
            async with contextlib.aclosing(data_events(r)) as events:
                await anext(events)
    redis_server.pause()
    try:
        async with httpx.AsyncClient(base_url=gateway, headers={"X-API-Key": CLIENT_KEY}, timeout=30) as http:
            await http.post("/chat", json={"message": "while redis is away"})
    finally:
        redis_server.resume()


async def paced_traffic(gateway: str, redis_server: RedisServer, tally: StreamTally) -> None:
    """One round of traffic, spread over at least a second and a half so that scrapes fall between rounds."""
    started = time.monotonic()
    await traffic(gateway, redis_server, tally)
    await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - started)))


async def streams_counted(gateway: str) -> dict[str, float]:
    """claude_gateway_streams_total by outcome, from the gateway's own /metrics."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        text = (await http.get("/metrics")).text
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "claude_gateway_streams_total":
                outcome = sample.labels["outcome"]
                counted[outcome] = counted.get(outcome, 0) + sample.value
    return counted


def tally_of(counted: dict[str, float]) -> StreamTally:
    ok = counted.get("ok", 0)
    return StreamTally(ok=int(ok), broken=int(sum(counted.values()) - ok))


async def empty_queries(prometheus_url: str, queries: list[tuple[str, str, str]]) -> set[str]:
    """The queries that return no series now."""
    empty = set()
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=30) as http:
        for _, panel, expr in queries:
            answer = (await http.get("/api/v1/query", params={"query": expr})).json()
            assert answer["status"] == "success", (panel, expr, answer)
            if not answer["data"]["result"]:
                empty.add(expr)
    return empty


@pytest.fixture(scope="module")
async def empty_after_traffic(
    simulator: Process,
    redis_server: RedisServer,
    prometheus: StartPrometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LiveRun]:
    """Serve (2 Gunicorn workers) and a job worker under traffic, scraped by Prometheus: the queries left empty."""
    tmp_path = tmp_path_factory.mktemp("live-dashboards")
    redis_server.resume()
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    # A budget, so that the budget panels have a gauge to read.
                    {"name": "checkout", "key": CLIENT_KEY, "budget_usd": {"day": 100, "month": 1000}},
                    {"name": "batch", "key": LIMITED_KEY, "rate_limit": "1/hour"},
                ]
            }
        )
    )
    # The API's metrics port apart from its app port, as the chart's ServiceMonitor scrapes it; the worker serves
    # only its metrics, on METRICS_PORT.
    api_port, api_metrics_port, worker_port = free_port(), free_port(), free_port()
    api = start_command(
        ["serve", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "2"],
        port=api_port,
        env={
            "ANTHROPIC_BASE_URL": simulator.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-upstream-0d9c4b",
            "RATE_LIMIT": "100000/minute",
            "UPSTREAM_MAX_RETRIES": "0",
            "GRACEFUL_TIMEOUT_S": "30",
            "METRICS_PORT": str(api_metrics_port),
            "REDIS_URL": redis_server.url,
            "API_KEYS_FILE": str(keys),
            "VALID_API_KEYS": "",
            "MAX_INFLIGHT_UPSTREAM": "3",
            "BACKPRESSURE_WAIT_S": "0.05",
            "REDIS_TIMEOUT_S": "0.2",
        },
    )
    worker = start_command(
        ["worker"],
        port=worker_port,
        env={
            "REDIS_URL": redis_server.url,
            "ANTHROPIC_BASE_URL": simulator.url,
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "HOST": "127.0.0.1",
            "METRICS_PORT": str(worker_port),
            "JOB_MAX_TRIES": "1",
        },
    )
    try:
        wait_for_workers(api, 2)
        url = prometheus({"api": [f"127.0.0.1:{api_metrics_port}"], "worker": [f"127.0.0.1:{worker_port}"]})
        expected = [(d, p, expr) for d, p, expr in QUERIES if (d, p) not in REQUIREMENTS]
        tally = StreamTally()
        for _ in range(TRAFFIC_ROUNDS):
            await paced_traffic(api.url, redis_server, tally)
        # Scrapes and rule evaluations land on their own clock: a panel still empty gets more traffic, a bounded
        # number of times, before it counts as failing.
        for _ in range(EXTRA_ROUNDS):
            await asyncio.sleep(3)
            empty = await empty_queries(url, expected)
            if not empty:
                break
            await paced_traffic(api.url, redis_server, tally)
        # And the panels that need more than the gateway: data there means their `requires=` is out of date.
        empty |= await empty_queries(url, [query for query in QUERIES if query not in expected])
        # A stream is counted as it closes, which may come just after the client has read its last event.
        deadline = time.monotonic() + STREAMS_SETTLE_S
        metrics_url = f"http://127.0.0.1:{api_metrics_port}"
        counted = await streams_counted(metrics_url)
        while tally_of(counted) != tally and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            counted = await streams_counted(metrics_url)
        yield LiveRun(empty, tally, counted)
    finally:
        worker.stop()
        api.stop()


@pytest.mark.slow
async def test_streams_are_counted_by_their_last_event(empty_after_traffic: LiveRun) -> None:
    """claude_gateway_streams_total (the availability and stream-success SLIs) agrees with what clients saw:
    each stream that ended with its done event is `ok`, each that broke after its first byte is its failure;
    streams refused before their first byte (backpressure 503s) and a client that hung up are not counted."""
    run = empty_after_traffic
    assert run.seen_by_clients.broken > 0, "the traffic broke no stream mid-way: this test would check nothing"
    assert tally_of(run.counted_by_gateway) == run.seen_by_clients, run.counted_by_gateway
    assert set(run.counted_by_gateway) <= {"ok", "overloaded"}, run.counted_by_gateway


def test_enough_panels_are_checked() -> None:
    assert len(QUERIES) >= 20
    assert len([q for q in QUERIES if (q[0], q[1]) not in REQUIREMENTS]) >= 20


@pytest.mark.slow
@pytest.mark.parametrize(("dashboard", "panel", "expr"), QUERIES, ids=[f"{d} / {p}" for d, p, _ in QUERIES])
async def test_panel_has_data(empty_after_traffic: LiveRun, dashboard: str, panel: str, expr: str) -> None:
    requirement = REQUIREMENTS.get((dashboard, panel))
    if requirement is not None:
        assert expr in empty_after_traffic.empty, f"{dashboard} / {panel} has data: drop its requires= in generate.py"
        pytest.skip(f"{dashboard} / {panel} needs {requirement}")
    assert expr not in empty_after_traffic.empty, f"{dashboard} / {panel} has no data: {expr}"
