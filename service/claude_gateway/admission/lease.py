"""What one upstream call holds while it runs: its place in the client's limits, and an upstream slot.

`UpstreamLease.acquire()` first admits the request against the client's request and token limits and spend budgets
in one round trip (all or nothing: a request refused for its tokens or budget is not counted as a request), holding
its `Reservation`, then takes an upstream slot (a client over its limits never occupies one). `release()` gives the
slot back and settles the reservation to the usage and cost the call reports (refunding what was not spent, charging
what was spent beyond) and records the usage for `GET /v1/gateway/usage`. A whole answer holds its lease in an
`async with` block and settles while its answer is sent (`release_in_background`: measured with `make bench`, half a
millisecond off the added latency p50, a Redis round trip); a streamed answer outlives its handler, and the stream's
end releases it before the last byte (`web.streaming`). Either way the request ends only once settled, and a
keep-alive client's next request, or its read of its usage, sees the settlement.

A plain object rather than an `asynccontextmanager`: a stream holds its lease for its whole life, thousands at once,
and a suspended generator with an exit stack around it cost a kilobyte and a half of each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from claude_gateway import pricing
from claude_gateway.admission.backpressure import UpstreamSlots
from claude_gateway.admission.keys import ClientKey
from claude_gateway.admission.ratelimit import RateLimiter
from claude_gateway.admission.ratelimit.limiter import Admission
from claude_gateway.admission.ratelimit.spend import to_micro_usd
from claude_gateway.context import RequestContext
from claude_gateway.telemetry import metrics
from claude_gateway.upstream.usage import Usage, cost_usd

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
        settlement = self._release_slot()
        if settlement is not None:
            with anyio.CancelScope(shield=True):
                await settlement

    def release_in_background(self) -> asyncio.Future[None]:
        """Give the slot back now, and settle in a task of its own (returned): for a whole answer, which then need
        not wait for Redis a second time before it is sent (`web.streaming.after_answer` waits for the task once it
        is). A keep-alive client's next request still sees the settlement: it reaches this worker later, and its
        admission goes to Redis behind the settlement, through the same pipeline."""
        settlement = self._release_slot()
        if settlement is None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return asyncio.ensure_future(settlement)

    def _release_slot(self) -> Coroutine[Any, Any, None] | None:
        """The slot given back, and the settlement still to await (None if released already)."""
        admission, self._admission = self._admission, None
        if admission is None:
            return None
        context = self.context
        if self._started is not None:
            context.upstream_s = time.perf_counter() - self._started
            self.slots.release()
        usage = context.usage = self.usage
        model = self.cost.model
        return self.limiter.settle(
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
