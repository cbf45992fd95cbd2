"""What one upstream call holds while it runs: its place in the client's limits, and an upstream slot.

`upstream_lease` first admits the request against the client's request and token limits in one round trip (all or
nothing: a request refused for its tokens is not counted as a request), reserving its worst-case token cost, then
takes an upstream slot (a client over its limits never occupies one). When the call ends it gives the slot back and
settles the reservation to the usage the call reports, refunding what was not spent, before the answer is complete
(the client's next request must see its refund). A streamed answer outlives its handler, so its lease is entered on
an `AsyncExitStack` that the stream's end closes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio

from claude_gateway import metrics
from claude_gateway.auth import ClientKey
from claude_gateway.backpressure import UpstreamSlots
from claude_gateway.context import RequestContext
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.relay import AnthropicStream
from claude_gateway.usage import Usage

# English text averages about four characters a token; over-estimating only holds budget until settlement.
CHARS_PER_TOKEN = 4


def estimate_input_tokens(chars: int) -> int:
    """The input side of a reservation: what a prompt of `chars` characters will cost at most, roughly."""
    return chars // CHARS_PER_TOKEN + 1


def overhead_header(context: RequestContext) -> dict[str, str]:
    """`X-Gateway-Overhead-Ms` on a whole answer: the request's time outside the upstream call."""
    return {"X-Gateway-Overhead-Ms": f"{context.overhead_s() * 1000:.3f}"}


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
    admission = await limiter.acquire(
        client.name,
        requests=client.request_limits,
        tokens=client.token_limits,
        cost=cost if client.token_limits else 0,
    )
    context.extra_headers.update(admission.headers.as_headers())
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
            await limiter.settle(admission.reservation, lease.usage.total if lease.usage else 0)


async def finish_stream(
    stream: AnthropicStream,
    lease: Lease,
    resources: AsyncExitStack,
    context: RequestContext,
    disconnected: bool,
) -> None:
    """However a stream ended: settle its call, free its connection, then give back its slot and unused tokens."""
    context.disconnected = disconnected and not stream.completed
    stream.close(cancelled=context.disconnected)
    lease.usage = stream.usage
    metrics.ACTIVE_STREAMS.dec()
    await resources.aclose()
