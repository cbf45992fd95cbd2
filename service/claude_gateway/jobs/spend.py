"""Jobs pay their way: what `POST /analyze` reserves when a document is submitted, and its settlement when the job ends.

At submission the job's planned calls are reserved against the key's token limits and budgets, as one request's
would be (`plan`): the document's input estimate, the chunk summaries fed to the final call, and each call's
output (`SUMMARY_MAX_TOKENS`, which is also the most a call can write, so a job's output never runs into debt).
A job that cannot fit is refused at once with the limiter's 429.

What the job's calls spend is counted in its ledger (beside its partial summaries, over all its tries). When the job
ends (complete, failed, cancelled) `settle_job` brings the reservation to that spend: a job that did less gives
the rest back, one that did more (a document whose summaries did not shrink) charges the excess. A job cancelled
by a worker's shutdown, then run again, settles again at its second end: the ledger remembers what was settled, so
each end settles only what is new. A job that never runs to an end of its own (expired in the queue, or its
worker killed at every try) keeps its reservation until its windows reset: that over-counts, never under-counts.

An ARQ job carries its reservation in its arguments (`to_wire`), so the worker, in another process, can settle it
against the same Redis counters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from claude_gateway import metrics
from claude_gateway.jobs.constants import CHUNK_CHARS, SUMMARY_MAX_CHARS, SUMMARY_MAX_TOKENS
from claude_gateway.jobs.summarise import SPENT_FIELDS, SYSTEM_PROMPT, PartStore, RedisParts, split_document
from claude_gateway.lease import Reservation, estimate_input_tokens
from claude_gateway.ratelimit import RateLimiter, TokenReservation
from claude_gateway.ratelimit.spend import to_micro_usd
from claude_gateway.ratelimit.windows import Charge
from claude_gateway.usage import Usage, cost_usd

logger = logging.getLogger("claude_gateway.jobs")

# The words around a chunk in its prompt (`summarise._prompt`), in characters, generously.
PROMPT_OVERHEAD_CHARS = 300
# A chunk summary as it is combined: "[Part N]\n" and the blank line between parts.
PART_HEADER_CHARS = 20


def plan(document: str, model: str, reserve_output: int) -> Reservation:
    """What summarising `document` may use at most: every call's input (the document's chunks, then the chunk
    summaries at their longest, level by level) and output, as `summarise` will make them."""
    calls = 0
    input_chars = 0
    chunks = len(split_document(document, CHUNK_CHARS))
    length = len(document)
    while True:
        calls += chunks
        input_chars += length + chunks * (PROMPT_OVERHEAD_CHARS + len(SYSTEM_PROMPT))
        if chunks == 1:
            break
        length = chunks * (SUMMARY_MAX_CHARS + PART_HEADER_CHARS)
        chunks = -(-length // CHUNK_CHARS)  # the summaries at their longest, cut again
    return Reservation(model, estimate_input_tokens(input_chars), min(SUMMARY_MAX_TOKENS, reserve_output) * calls)


def to_wire(reservation: TokenReservation, limiter: RateLimiter) -> dict[str, Any] | None:
    """A reservation as an ARQ job argument (JSON); None when it holds nothing a worker could reach (nothing
    charged, or charged to this process's memory while Redis was down)."""
    if not reservation.charges or reservation.windows is not limiter.windows or limiter.fallback is None:
        return None
    return {
        "client": reservation.client,
        "tokens": reservation.cost,
        "spend": reservation.spend,
        "charges": [
            [charge.key, charge.period_s, charge.window_end, charge.kind, charge.amount]
            for charge in reservation.charges
        ],
    }


def from_wire(data: dict[str, Any], limiter: RateLimiter) -> TokenReservation:
    """The reservation a job carried, on this process's limiter (the worker's, over the same Redis)."""
    charges = tuple(
        Charge(str(key), int(period_s), float(window_end), kind, int(amount))
        for key, period_s, window_end, kind, amount in data["charges"]
    )
    return TokenReservation(
        str(data["client"]), int(data["tokens"]), int(data["spend"]), charges=charges, windows=limiter.windows
    )


def _usage(ledger: dict[str, int], prefix: str) -> Usage:
    return Usage(**{name: ledger.get(f"{prefix}:{name}", 0) for name in SPENT_FIELDS})


async def settle_job(
    limiter: RateLimiter, reservation: TokenReservation | None, parts: PartStore, *, client: str, model: str
) -> None:
    """Bring the job's reservation to what its calls spent so far, and record the usage not recorded yet.

    The first settlement starts from the reservation; a later one (the job ran again after a shutdown) from what
    the first settled. Never raises: a job's outcome does not depend on its accounting."""
    try:
        ledger = await parts.ledger()
        spent = _usage(ledger, "spent")
        settled = _usage(ledger, "settled")
        calls = ledger.get("spent:calls", 0) - ledger.get("settled:calls", 0)
        first = "settled:calls" not in ledger
        await parts.write_ledger(
            {f"settled:{name}": getattr(spent, name) for name in SPENT_FIELDS}
            | {"settled:calls": ledger.get("spent:calls", 0)}
        )
    except Exception as exc:  # Redis trouble: the reservation expires with its windows
        logger.warning("could not read a finished job's spend (%s): its reservation is kept", type(exc).__name__)
        return
    spent_cost = cost_usd(model, spent) or Decimal(0)
    if reservation is not None:
        if not first:  # what the windows hold now is what was settled last time
            settled_cost = cost_usd(model, settled) or Decimal(0)
            reservation = TokenReservation(
                reservation.client,
                settled.total,
                to_micro_usd(settled_cost),
                charges=reservation.charges,
                windows=reservation.windows,
            )
        await limiter.settle(reservation, spent.total, cost=spent_cost)
    new = Usage(**{name: getattr(spent, name) - getattr(settled, name) for name in SPENT_FIELDS})
    if new.total:
        await limiter.record_usage(
            client, metrics.model_label(model), new, (cost_usd(model, new) or Decimal(0)), calls=calls
        )


@dataclass(frozen=True, slots=True)
class JobSpend:
    """What a submitted job holds against its key's limits and budgets (`POST /analyze`), until it ends."""

    limiter: RateLimiter
    reservation: TokenReservation
    model: str

    def to_wire(self) -> dict[str, Any] | None:
        return to_wire(self.reservation, self.limiter)

    async def refund(self) -> None:
        """Give it all back: the job was not queued (refused, or the same Idempotency-Key's task exists)."""
        await self.limiter.settle(self.reservation, 0)

    async def settle(self, parts: PartStore, *, client: str) -> None:
        await settle_job(self.limiter, self.reservation, parts, client=client, model=self.model)


async def refund_unstarted(limiter: RateLimiter, wire: dict[str, Any] | None, parts: RedisParts) -> None:
    """An ARQ job aborted: give its reservation back unless it started (then its worker settles it, having seen
    the cancellation). Never raises."""
    if not wire:
        return
    try:
        if await parts.started():
            return
    except Exception as exc:
        logger.warning("could not tell whether an aborted job ran (%s): its reservation is kept", type(exc).__name__)
        return
    await limiter.settle(from_wire(wire, limiter), 0)


# The worker's limiter over its Redis client, made on the first job that settles and kept in ARQ's ctx.
_WORKER_LIMITER = "spend_limiter"


async def settle_worker_job(ctx: dict[str, Any], wire: dict[str, Any] | None, parts: PartStore, *, client: str) -> None:
    """An ARQ job's end, in the worker: settle the reservation it carried (`to_wire`) and record its usage."""
    settings = ctx["settings"]
    limiter = ctx.get(_WORKER_LIMITER)
    if limiter is None:
        limiter = ctx[_WORKER_LIMITER] = RateLimiter.from_settings(settings, redis=ctx["redis"])
    reservation = from_wire(wire, limiter) if wire else None
    await settle_job(limiter, reservation, parts, client=client, model=settings.default_model)
