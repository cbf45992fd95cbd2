"""What one upstream call holds while it runs: its place in the client's limits, and an upstream slot.

`UpstreamLease.acquire()` first admits the request against the client's request and token limits in one round trip
(all or nothing: a request refused for its tokens is not counted as a request), reserving its worst-case token cost,
then takes an upstream slot (a client over its limits never occupies one). `release()` gives the slot back and
settles the reservation to the usage the call reports, refunding what was not spent, before the answer is complete
(the client's next request must see its refund). A whole answer holds its lease in an `async with` block; a streamed
answer outlives its handler, and the stream's end releases it (`start_stream`, `finish_stream`).

A plain object rather than an `asynccontextmanager`: a stream holds its lease for its whole life, thousands at once,
and a suspended generator with an exit stack around it cost a kilobyte and a half of each.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from types import TracebackType

import anyio

from claude_gateway import metrics
from claude_gateway.auth import ClientKey
from claude_gateway.backpressure import UpstreamSlots
from claude_gateway.context import RequestContext
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.ratelimit.limiter import Admission
from claude_gateway.relay import NO_HEADERS, AnthropicStream, open_stream
from claude_gateway.sse import EventStreamResponse
from claude_gateway.upstream_call import UpstreamCall
from claude_gateway.upstream_client import UpstreamClient
from claude_gateway.usage import Usage

# English text averages about four characters a token; over-estimating only holds budget until settlement.
CHARS_PER_TOKEN = 4


def estimate_input_tokens(chars: int) -> int:
    """The input side of a reservation: what a prompt of `chars` characters will cost at most, roughly."""
    return chars // CHARS_PER_TOKEN + 1


def overhead_header(context: RequestContext) -> dict[str, str]:
    """`X-Gateway-Overhead-Ms` on a whole answer: the request's time outside the upstream call."""
    return {"X-Gateway-Overhead-Ms": f"{context.overhead_s() * 1000:.3f}"}


class UpstreamLease:
    """A call's place in the client's limits and an upstream slot, from `acquire()` to `release()`."""

    __slots__ = ("_admission", "_started", "client", "context", "cost", "limiter", "route", "slots", "usage")

    def __init__(
        self,
        *,
        route: str,
        client: ClientKey,
        cost: int,
        limiter: RateLimiter,
        slots: UpstreamSlots,
        context: RequestContext,
    ) -> None:
        self.route = route
        self.client = client
        self.cost = cost
        self.limiter = limiter
        self.slots = slots
        self.context = context
        # What the call spent, as it reports it; the reservation is settled to this.
        self.usage: Usage | None = None
        self._admission: Admission | None = None
        self._started: float | None = None

    async def acquire(self) -> UpstreamLease:
        """Admit the call (429 past a limit) and take a slot (503 when none frees in time)."""
        client = self.client
        admission = await self.limiter.acquire(
            client.name,
            requests=client.request_limits,
            tokens=client.token_limits,
            cost=self.cost if client.token_limits else 0,
        )
        self.context.extra_headers.update(admission.headers.as_headers())
        self._admission = admission
        try:
            await self.slots.acquire(self.route)
        except BaseException:
            await self.release()
            raise
        self._started = time.perf_counter()
        return self

    async def release(self) -> None:
        """Give the slot back and settle the reservation to `usage`: once, shielded from cancellation."""
        admission, self._admission = self._admission, None
        if admission is None:
            return
        context = self.context
        if self._started is not None:
            context.upstream_s = time.perf_counter() - self._started
            self.slots.release()
        context.usage = self.usage
        with anyio.CancelScope(shield=True):
            await self.limiter.settle(admission.reservation, self.usage.total if self.usage else 0)

    async def __aenter__(self) -> UpstreamLease:
        return await self.acquire()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.release()


async def start_stream(
    lease: UpstreamLease,
    new_call: Callable[[], UpstreamCall],
    upstream: UpstreamClient,
    body: bytes,
    headers: Mapping[str, str],
) -> AnthropicStream:
    """Hold `lease`, then open a streamed call (made by `new_call` only once the lease is held: a request refused
    never reached Anthropic, so it must not count as an upstream call). If the call cannot start, the lease is
    given back at once; otherwise the stream's end gives it back (`stream_response`)."""
    await lease.acquire()
    try:
        call = new_call()
        response = await open_stream(upstream, body, headers, call)  # ends `call` itself if it fails
    except BaseException:
        await lease.release()
        raise
    metrics.ACTIVE_STREAMS.inc()
    return AnthropicStream(response, call, lease.context.started)


def stream_response(
    stream: AnthropicStream, lease: UpstreamLease, chunks: AsyncIterator[bytes], headers: Mapping[str, str] = NO_HEADERS
) -> EventStreamResponse:
    """The SSE response relaying `chunks` of `stream`; its end, however it comes, settles the call and the lease."""
    return EventStreamResponse(
        chunks,
        on_close=partial(finish_stream, stream, lease),
        headers=[(name.encode(), value.encode()) for name, value in headers.items()],
    )


async def finish_stream(stream: AnthropicStream, lease: UpstreamLease, disconnected: bool) -> None:
    """However a stream ended: settle its call, free its connection, then give back its slot and unused tokens."""
    context = lease.context
    context.disconnected = disconnected and not stream.completed
    stream.close(cancelled=context.disconnected)
    lease.usage = stream.usage
    metrics.ACTIVE_STREAMS.dec()
    await lease.release()
