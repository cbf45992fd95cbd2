"""Health: liveness (the process serves), readiness (it can take traffic), and the deep check that calls Claude.

The deep check spends a real `HEALTH_MODEL` call, so its result is cached for `HEALTH_CACHE_TTL_S` and concurrent
probes share one call in flight. It goes through the process's one `UpstreamClient`, the routes' own path to
Anthropic (same pool, key, TLS and timeouts), so that it cannot say "connected" while the routes cannot connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from claude_gateway.errors import GatewayError, UpstreamMisconfigured, classify
from claude_gateway.upstream_client import HTTPClientError, UpstreamClient

# Probes every 10 s from several load balancers would otherwise spend a call each; 30 s keeps it to two a minute.
HEALTH_CACHE_TTL_S = 30.0
HEALTH_MAX_TOKENS = 10
# The deep check must answer before a load balancer's probe times out (commonly 5-10 s).
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class HealthResult:
    healthy: bool
    body: dict[str, Any]


class HealthCheck:
    def __init__(self, upstream: UpstreamClient, model: str) -> None:
        self._upstream = upstream
        self._model = model
        self._body = orjson.dumps(
            {"model": model, "max_tokens": HEALTH_MAX_TOKENS, "messages": [{"role": "user", "content": "ping"}]}
        )
        self._cached: HealthResult | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()
        self.readiness_checks: dict[str, Callable[[], Awaitable[bool]]] = {}

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
        """Ready unless a configured dependency (Redis) does not answer.

        A draining server needs no flag here: on SIGTERM uvicorn closes its listening socket at once, so a probe's
        new connection is refused (not ready) while the open streams finish on theirs.
        """
        results = await asyncio.gather(*(check() for check in self.readiness_checks.values()))
        checks = {name: "ok" if ok else "unavailable" for name, ok in zip(self.readiness_checks, results, strict=True)}
        healthy = all(results)
        return HealthResult(healthy, {"status": "ready" if healthy else "not_ready", "checks": checks})
