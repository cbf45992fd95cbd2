"""Fixtures for the rate limiter: real redis-servers on free ports (never 6379), limiters that close.

- `redis_server` (session): one redis-server for the whole run; `redis_url` flushes it before each test.
- `outage_redis` (per test): a redis-server of its own, with a password, that a test may kill, pause
  (SIGSTOP, to hang like an overloaded or partitioned server), resume and restart on the same port.
- `make_limiter(backend, **settings)`: a `RateLimiter` from `Settings`, closed after the test.
- `backend`: each semantic test runs on Redis and on the in-process memory storage alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from claude_gateway.admission.ratelimit import RateLimiter
from claude_gateway.settings import load_settings

from .support import OUTAGE_PASSWORD, Records, RedisServer, require_redis_server

MakeLimiter = Callable[..., Awaitable[RateLimiter]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server())
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_server.client() as client:
        client.flushdb()
    return redis_server.url


@pytest.fixture
def outage_redis() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server(), password=OUTAGE_PASSWORD)
    server.start()
    yield server
    server.close()


@pytest.fixture
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiter]:
    """`await make_limiter("redis" | "memory" | <redis url>, **settings)`, closed at the end of the test."""
    built: list[RateLimiter] = []

    async def make(backend: str, retry_interval_s: float = 1.0, **overrides: Any) -> RateLimiter:
        if backend == "redis":
            overrides["redis_url"] = request.getfixturevalue("redis_url")
        elif backend != "memory":
            overrides["redis_url"] = backend
        else:
            overrides["redis_url"] = None
        limiter = RateLimiter.from_settings(load_settings(**overrides), retry_interval_s=retry_interval_s)
        built.append(limiter)
        return limiter

    yield make
    for limiter in built:
        await limiter.aclose()


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def limiter(backend: str, make_limiter: MakeLimiter) -> RateLimiter:
    return await make_limiter(backend)


@pytest.fixture
def ratelimit_logs() -> Iterator[Records]:
    """What the limiter logged, captured on its own logger (whatever the app's logging setup does)."""
    logger = logging.getLogger("claude_gateway.admission.ratelimit")
    handler = Records()
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)
