"""What one upstream call holds while it runs: a token reservation and an upstream slot.

`upstream_lease` takes both (tokens first: a client over its budget should not occupy a slot) and gives both back
when the call ends, settling tokens to the usage the call reports. A streamed answer outlives its handler, so its
lease is entered on an `AsyncExitStack` that the stream's generator closes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from claude_gateway.auth import ClientKey
from claude_gateway.backpressure import UpstreamSlots
from claude_gateway.budget import TokenBudget
from claude_gateway.context import RequestContext
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.usage import Usage


@dataclass(slots=True)
class Lease:
    usage: Usage | None = None


@asynccontextmanager
async def upstream_lease(
    *,
    route: str,
    client: ClientKey,
    cost: int,
    limiter: RateLimiter,
    slots: UpstreamSlots,
    context: RequestContext,
) -> AsyncIterator[Lease]:
    budget = await TokenBudget.reserve(limiter, client, cost)
    context.extra_headers.update(budget.headers())
    lease = Lease()
    try:
        await slots.acquire(route)
        started = time.perf_counter()
        try:
            yield lease
        finally:
            context.upstream_s = time.perf_counter() - started
            slots.release()
    finally:
        context.usage = lease.usage
        with anyio.CancelScope(shield=True):
            await budget.settle(lease.usage)
