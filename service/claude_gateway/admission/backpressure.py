"""A bound on upstream calls in flight per worker process.

Past the bound a request waits up to `BACKPRESSURE_WAIT_S` for a slot, then gets 503 with `Retry-After`, instead of
piling up until every call times out.
"""

from __future__ import annotations

import asyncio

from claude_gateway.errors import Overloaded
from claude_gateway.telemetry import metrics

# What a refused client is told to wait: slots free as fast as calls finish, so a second is a fair guess.
RETRY_AFTER_S = 1


class UpstreamSlots:
    def __init__(self, size: int, wait_s: float) -> None:
        self._semaphore = asyncio.Semaphore(size)
        self._wait_s = wait_s

    async def acquire(self, route: str) -> None:
        if not self._semaphore.locked():
            await self._semaphore.acquire()
            return
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._wait_s)
        except TimeoutError:
            metrics.BACKPRESSURE_REJECTED.labels(route=route).inc()
            raise Overloaded(headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    def release(self) -> None:
        self._semaphore.release()
