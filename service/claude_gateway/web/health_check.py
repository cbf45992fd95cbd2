"""Health: liveness (the process serves), readiness (send me traffic), and the deep check that calls Claude.

Readiness answers the one question a load balancer asks: should traffic come here? So it is 503 only while this
instance would refuse that traffic: while it drains (`Drain`, set by the server on SIGTERM), or while Redis is
down in `RATE_LIMIT_FAIL_MODE=closed` (every rate-limited request then gets 503). In the default fail-open mode a
Redis outage changes nothing the probe cares about (requests are served with per-process limits), so readiness
stays 200 and says how Redis is in its body and in `claude_gateway_redis_up`: taking every pod out of its Service
because Redis blinked would turn a degraded gateway into a dead one.

The deep check spends a real `HEALTH_MODEL` call, so its result is cached for `HEALTH_CACHE_TTL_S` and concurrent
probes share one call in flight. It goes through the process's one `UpstreamClient`, the routes' own path to
Anthropic (same pool, key, TLS and timeouts), so that it cannot say "connected" while the routes cannot connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from claude_gateway.errors import GatewayError, UpstreamMisconfigured, classify
from claude_gateway.telemetry import metrics
from claude_gateway.upstream.client import HTTPClientError, UpstreamClient
from claude_gateway.web.drain import Drain

# Probes every 10 s from several load balancers would otherwise spend a call each; 30 s keeps it to two a minute.
HEALTH_CACHE_TTL_S = 30.0
HEALTH_MAX_TOKENS = 10
# The deep check must answer before a load balancer's probe times out (commonly 5-10 s).
HEALTH_TIMEOUT_S = 5.0
# Readiness waits at most this long for Redis, whatever REDIS_TIMEOUT_S says: a probe must answer inside the kubelet's
# timeoutSeconds (1 s by default) even when Redis hangs, or the probe's own timeout would mark the pod unready in
# fail-open mode too. A Redis that takes longer than this to answer a PING counts as down.
READY_REDIS_WAIT_S = 0.5

RedisState = Literal["up", "down", "not_configured"]

__all__ = ["Drain", "HealthCheck", "HealthResult"]


@dataclass(frozen=True, slots=True)
class HealthResult:
    healthy: bool
    body: dict[str, Any]


class HealthCheck:
    """The deep check and readiness of one app.

    `redis_ping` (None without REDIS_URL) says whether Redis answers and never raises; `redis_required` is True in
    fail-closed mode, where a Redis outage makes this instance refuse its traffic.
    """

    def __init__(
        self,
        upstream: UpstreamClient,
        model: str,
        *,
        drain: Drain | None = None,
        redis_ping: Callable[[], Awaitable[bool]] | None = None,
        redis_required: bool = False,
    ) -> None:
        self._upstream = upstream
        self._model = model
        self._body = orjson.dumps(
            {"model": model, "max_tokens": HEALTH_MAX_TOKENS, "messages": [{"role": "user", "content": "ping"}]}
        )
        self._cached: HealthResult | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()
        self.drain = drain if drain is not None else Drain()
        self._redis_ping = redis_ping
        self._redis_required = redis_required

    async def deep(self) -> HealthResult:
        if self._fresh():
            assert self._cached is not None
            return self._cached
        async with self._lock:
            if not self._fresh():
                self._cached = await self._probe()
                self._cached_at = time.monotonic()
            assert self._cached is not None
            return self._cached

    def _fresh(self) -> bool:
        return self._cached is not None and time.monotonic() - self._cached_at < HEALTH_CACHE_TTL_S

    async def _probe(self) -> HealthResult:
        checked_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            # One try (a probe asks again soon enough), within the time a load balancer's probe waits.
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                response = await self._upstream.post_message(self._body, retries=0)
                try:
                    await response.read()
                finally:
                    response.release()
        except UpstreamMisconfigured:
            claude = "auth_error"
        except GatewayError as exc:
            claude = exc.outcome
        except (TimeoutError, HTTPClientError) as exc:
            claude = classify(exc).outcome
        else:
            return HealthResult(
                True,
                {"status": "healthy", "claude": "connected", "model": self._model, "checked_at": checked_at},
            )
        return HealthResult(
            False, {"status": "degraded", "claude": claude, "model": self._model, "checked_at": checked_at}
        )

    async def ready(self) -> HealthResult:
        """200 unless draining, or Redis is down and required (fail-closed); Redis's state in the body either way."""
        redis = await self.redis_state()
        if self.drain.active:
            status = "draining"
        elif redis == "down" and self._redis_required:
            status = "not_ready"
        else:
            status = "ready"
        return HealthResult(status == "ready", {"status": status, "redis": redis, "draining": self.drain.active})

    async def redis_state(self) -> RedisState:
        """Whether Redis answers a PING now (within READY_REDIS_WAIT_S); kept in `claude_gateway_redis_up` too."""
        if self._redis_ping is None:
            return "not_configured"
        try:
            async with asyncio.timeout(READY_REDIS_WAIT_S):
                up = await self._redis_ping()
        except TimeoutError:
            up = False
        metrics.REDIS_UP.set(1 if up else 0)
        return "up" if up else "down"
