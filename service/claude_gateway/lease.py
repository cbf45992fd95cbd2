"""What one upstream call holds while it runs: its place in the client's limits, and an upstream slot.

`UpstreamLease.acquire()` first admits the request against the client's request and token limits and spend budgets
in one round trip (all or nothing: a request refused for its tokens or budget is not counted as a request), holding
its `Reservation`, then takes an upstream slot (a client over its limits never occupies one). `release()` gives the
slot back and settles the reservation to the usage and cost the call reports (refunding what was not spent, charging
what was spent beyond) and records the usage for `GET /v1/gateway/usage`, before the answer is complete (the
client's next request must see its refund). A whole answer holds its lease in an `async with` block; a streamed
answer outlives its handler, and the stream's end releases it (`start_stream`, `finish_stream`).

A plain object rather than an `asynccontextmanager`: a stream holds its lease for its whole life, thousands at once,
and a suspended generator with an exit stack around it cost a kilobyte and a half of each.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import TracebackType

import anyio

from claude_gateway import metrics, pricing
from claude_gateway.auth import ClientKey
from claude_gateway.backpressure import UpstreamSlots
from claude_gateway.context import RequestContext
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.ratelimit.limiter import Admission
from claude_gateway.ratelimit.spend import to_micro_usd
from claude_gateway.relay import NO_HEADERS, AnthropicStream, open_stream
from claude_gateway.sse import EventStreamResponse
from claude_gateway.upstream_call import UpstreamCall
from claude_gateway.upstream_client import UpstreamClient
from claude_gateway.usage import Usage, cost_usd

# English text averages about four characters a token; over-estimating only holds budget until settlement.
CHARS_PER_TOKEN = 4


def estimate_input_tokens(chars: int) -> int:
    """The input side of a reservation: what a prompt of `chars` characters will cost at most, roughly."""
    return chars // CHARS_PER_TOKEN + 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a call holds against its key's token limits and budgets until it settles to its real usage: the input
    estimate and `min(max_tokens, TOKEN_RESERVE_OUTPUT)` output tokens, and their cost at the model's prices.

    The output reserved may be less than the call can use (an agent client's max_tokens of 128k): a call that uses
    more settles the excess into the window anyway, past its limit if need be (debt), and the key's next requests
    wait until the window resets. So concurrent requests can take a window over its limit by at most
    n x (max_tokens - TOKEN_RESERVE_OUTPUT) tokens (and that many output tokens' price over a budget)."""

    model: str
    input_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, model: str, input_chars: int, max_tokens: int, reserve_output: int) -> Reservation:
        return cls(model, estimate_input_tokens(input_chars), min(max_tokens, reserve_output))

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def spend_micro_usd(self) -> int:
        """The worst case the reservation can cost: input at the input price, output at the output price (0 for a
        model without a price: it is served, and charges nothing to a budget)."""
        price = pricing.active().price(self.model)
        if price is None:
            return 0
        return to_micro_usd((price.input * self.input_tokens + price.output * self.output_tokens) / 1_000_000)


# What a call that spends no tokens itself holds (Message Batches, Files): its request limit and a spent budget
# still apply; nothing is reserved, and nothing settled.
NOTHING_RESERVED = Reservation("", 0, 0)


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
        cost: Reservation,
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
        budget = client.budget
        admission = await self.limiter.acquire(
            client.name,
            requests=client.request_limits,
            tokens=client.token_limits,
            cost=self.cost.tokens if client.token_limits else 0,
            budget=budget,
            spend=self.cost.spend_micro_usd() if budget.limited else 0,
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
        usage = context.usage = self.usage
        model = self.cost.model
        with anyio.CancelScope(shield=True):
            await self.limiter.settle(
                admission.reservation,
                usage or 0,
                model=metrics.model_label(model),
                cost=cost_usd(model, usage),
            )

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
