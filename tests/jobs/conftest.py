"""Fixtures for the jobs tests: a real redis-server, the real simulator over HTTP, and factories that clean up.

- `redis_server` (session): `redis-server` on a free port (never 6379), without persistence; skipped when the
  binary is missing, a failure when CI=true.
- `redis` (per test): an ARQ Redis client on it, the database flushed first.
- `simulator` (session): the Anthropic simulator on a free port, answering at once; `sim` (per test) resets its
  counters and reads them over HTTP.
- `make_settings(**overrides)`: `Settings` pointed at both (a job's calls are never retried in place, whatever
  UPSTREAM_MAX_RETRIES says: each upstream request the tests count is one try of a job).
- `make_queue()`, `make_inprocess_queue()`, `workers`: built on demand, closed at the end of the test.
- `spans`: an in-memory span exporter on the process's tracer provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis

from claude_gateway.jobs import ArqJobQueue, InProcessJobQueue
from claude_gateway.jobs.arq_queue import connect
from claude_gateway.jobs.constants import IN_PROCESS_MAX_JOBS
from claude_gateway.settings import Settings, load_settings
from claude_gateway.simulator import BackgroundSimulator, SimulatorConfig
from claude_gateway.upstream.client import UpstreamClient
from tests.support.servers import RedisServer

from .support import FAST_RETRIES, MakeSettings, Sim, Workers


@pytest.fixture(scope="session")
def redis_server(redis_server: RedisServer) -> str:
    """The session's redis-server (tests/conftest.py), as the URL these tests use."""
    return redis_server.url


@pytest.fixture(scope="session")
def simulator() -> Iterator[BackgroundSimulator]:
    """The real simulator, answering at once (no time to first token, no pacing)."""
    with BackgroundSimulator(SimulatorConfig(ttft_ms=0, tokens_per_s=0)) as sim:
        yield sim


@pytest.fixture
async def sim(simulator: BackgroundSimulator) -> Sim:
    counters = Sim(simulator.base_url)
    await counters.reset()
    return counters


@pytest.fixture
async def redis(redis_server: str) -> AsyncIterator[ArqRedis]:
    client = connect(load_settings(redis_url=redis_server), timeout_s=2.0)
    await client.flushdb()
    yield client
    await client.aclose(close_connection_pool=True)


@pytest.fixture
def make_settings(redis: ArqRedis, redis_server: str, simulator: BackgroundSimulator) -> MakeSettings:
    """Depends on `redis`, so that every test that builds settings starts from an empty database."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_server,
            "anthropic_base_url": simulator.base_url,
            "anthropic_api_key": "sk-ant-test",
            "upstream_max_retries": 2,
            "upstream_timeout_s": 10.0,
            "job_max_tries": 3,
            "metrics_enabled": False,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def make_queue(make_settings: MakeSettings) -> AsyncIterator[Callable[..., ArqJobQueue]]:
    built: list[ArqJobQueue] = []

    def make(settings: Settings | None = None) -> ArqJobQueue:
        queue = ArqJobQueue(settings or make_settings())
        built.append(queue)
        return queue

    yield make
    for queue in built:
        await queue.aclose()


@pytest.fixture
async def make_inprocess_queue(make_settings: MakeSettings) -> AsyncIterator[Callable[..., InProcessJobQueue]]:
    built: list[tuple[InProcessJobQueue, UpstreamClient]] = []

    def make(*, max_jobs: int = IN_PROCESS_MAX_JOBS, **overrides: Any) -> InProcessJobQueue:
        settings = make_settings(**{"redis_url": None, **overrides})
        upstream = UpstreamClient(settings, retry_policy=FAST_RETRIES)
        queue = InProcessJobQueue(settings, upstream, max_jobs=max_jobs)
        built.append((queue, upstream))
        return queue

    yield make
    for queue, upstream in built:
        await queue.aclose()
        await upstream.aclose()


@pytest.fixture
async def make_upstream(make_settings: MakeSettings) -> AsyncIterator[Callable[..., UpstreamClient]]:
    """`make_upstream(**settings)`: an `UpstreamClient` with the tests' short backoff, closed after the test."""
    built: list[UpstreamClient] = []

    def make(**overrides: Any) -> UpstreamClient:
        upstream = UpstreamClient(make_settings(**overrides), retry_policy=FAST_RETRIES)
        built.append(upstream)
        return upstream

    yield make
    for upstream in built:
        await upstream.aclose()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    made = Workers()
    yield made
    await made.close()
