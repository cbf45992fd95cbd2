"""`RateLimiter`: per-client request and token limits, and what happens when Redis does not answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from limits import RateLimitItem
from redis.asyncio import Redis
from redis.exceptions import RedisError

from claude_gateway import errors, metrics
from claude_gateway.ratelimit.quota import LimitHeaders, Quota, refusal_headers, tightest
from claude_gateway.ratelimit.windows import (
    Charge,
    LimitKind,
    MemoryWindows,
    Outcome,
    RedisWindows,
    Settlement,
    Slot,
    SlotState,
    Windows,
    window_key,
)
from claude_gateway.settings import Settings
from claude_gateway.usage import Usage

logger = logging.getLogger("claude_gateway.ratelimit")

T = TypeVar("T")
FailMode = Literal["open", "closed"]

# After a failed Redis call, go straight to the fail mode for this long before one request tries Redis again:
# an outage then costs one timeout per second per process, not one per request, and limits resume within a
# second.
REDIS_RETRY_INTERVAL_S = 1.0
# What counts as "Redis did not answer": its own errors, socket errors, and our asyncio timeout.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
REQUEST_COST = 1


class LimitExceeded(errors.RateLimited):
    """429 from our own limits; `limit` says which kind refused (``requests`` or ``tokens``)."""

    def __init__(self, limit: LimitKind, message: str, *, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.limit: LimitKind = limit


@dataclass(slots=True, eq=False)
class TokenReservation:
    """Tokens held for one request until `RateLimiter.settle` brings them to its real usage."""

    client: str
    cost: int
    headers: LimitHeaders = field(default_factory=LimitHeaders)
    charges: tuple[Charge, ...] = field(default=(), repr=False)
    windows: Windows | None = field(default=None, repr=False)
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """What `acquire` let through: the headers to send and the token reservation to settle."""

    headers: LimitHeaders
    reservation: TokenReservation


def _slots(kind: LimitKind, client: str, items: Sequence[RateLimitItem], cost: int) -> list[Slot]:
    return [
        Slot(
            kind=kind,
            key=window_key(kind, client, item),
            amount=item.amount,
            period_s=item.get_expiry(),
            cost=cost,
            description=f"{item.amount} {kind} per {item.multiples} {item.GRANULARITY.name}",
        )
        for item in items
    ]


def _quotas(slots: Sequence[Slot], states: Sequence[SlotState], kind: LimitKind, now: float) -> list[Quota]:
    return [
        Quota.of(slot.amount, state.used, now + state.reset_in_s, now)
        for slot, state in zip(slots, states, strict=True)
        if slot.kind == kind
    ]


def _refusal(client: str, slots: Sequence[Slot], outcome: Outcome, headers: LimitHeaders, now: float) -> LimitExceeded:
    refused = [
        (slot, Quota.of(slot.amount, state.used, now + state.reset_in_s, now))
        for slot, state in zip(slots, outcome.states, strict=True)
        if state.used + slot.cost > slot.amount
    ]
    retry_after_s = max(quota.reset_after_s for _, quota in refused)
    # A cost above a limit's whole amount can never pass: that is the answer, whatever else refused.
    too_big = [slot for slot, _ in refused if slot.cost > slot.amount]
    requests_refused = any(slot.kind == "requests" for slot, _ in refused)
    kind: LimitKind = "requests" if requests_refused and not too_big else "tokens"
    if too_big:
        message = (
            f"This request may use up to {too_big[0].cost} tokens, more than this key's token limit "
            f"({too_big[0].description}) allows: lower max_tokens or shorten the input"
        )
    elif kind == "requests":
        binding = next(slot for slot, _ in refused if slot.kind == "requests")
        message = f"Rate limit exceeded for this key ({binding.description}): retry in {retry_after_s} s"
    else:
        binding = next(slot for slot, _ in refused)
        message = f"Token rate limit exceeded for this key ({binding.description}): retry in {retry_after_s} s"
    metrics.RATE_LIMITED.labels(client=client, limit=kind).inc()
    return LimitExceeded(kind, message, headers=refusal_headers(headers, retry_after_s, retryable=not too_big))


class RateLimiter:
    """Request and token limits per client name, on Redis when configured (see the package docstring)."""

    def __init__(
        self,
        windows: Windows,
        *,
        fallback: Windows | None = None,
        fail_mode: FailMode = "open",
        timeout_s: float = 0.5,
        retry_interval_s: float = REDIS_RETRY_INTERVAL_S,
    ) -> None:
        """With a `fallback`, `windows` may fail (Redis): each call is bounded by `timeout_s`."""
        self.windows = windows
        self.fallback = fallback
        self.fail_mode: FailMode = fail_mode
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self._down = False
        self._retry_at = 0.0  # monotonic
        self._probing = False

    @classmethod
    def from_settings(
        cls, settings: Settings, *, redis: Redis | None = None, retry_interval_s: float = REDIS_RETRY_INTERVAL_S
    ) -> RateLimiter:
        """Redis when REDIS_URL is set, else this process's memory. Connects lazily.

        `redis`: the process's client for REDIS_URL, shared with the jobs (the limiter does not close it); without
        one, the limiter makes its own, whose sockets give up after REDIS_TIMEOUT_S.
        """
        if settings.redis_url is None:
            return cls(MemoryWindows())
        if redis is None:
            windows = RedisWindows.connect(settings.redis_url.get_secret_value(), timeout_s=settings.redis_timeout_s)
        else:
            windows = RedisWindows(redis)
        return cls(
            windows,
            fallback=MemoryWindows(),
            fail_mode=settings.rate_limit_fail_mode,
            timeout_s=settings.redis_timeout_s,
            retry_interval_s=retry_interval_s,
        )

    @property
    def backend(self) -> str:
        return self.windows.name

    async def hit_requests(self, client: str, limits: Sequence[RateLimitItem]) -> LimitHeaders:
        """Count one request against each request limit of `client`; raises LimitExceeded or Overloaded."""
        return (await self.acquire(client, requests=limits)).headers

    async def reserve_tokens(self, client: str, limits: Sequence[RateLimitItem], cost: int) -> TokenReservation:
        """Hold `cost` tokens (input estimate + max_tokens) against each token limit, until `settle`."""
        return (await self.acquire(client, tokens=limits, cost=cost)).reservation

    async def acquire(
        self,
        client: str,
        *,
        requests: Sequence[RateLimitItem] = (),
        tokens: Sequence[RateLimitItem] = (),
        cost: int = 0,
    ) -> Admission:
        """Both at once, all or nothing, one round trip: a request refused for tokens is not counted."""
        slots = _slots("requests", client, requests, REQUEST_COST)
        if cost > 0:
            slots += _slots("tokens", client, tokens, cost)
        if not slots:
            return Admission(LimitHeaders(), TokenReservation(client, 0))
        outcome, windows = await self._call(lambda backend: backend.acquire(slots))
        now = time.time()
        headers = LimitHeaders(
            requests=tightest(_quotas(slots, outcome.states, "requests", now)),
            tokens=tightest(_quotas(slots, outcome.states, "tokens", now)),
        )
        if not outcome.admitted:
            raise _refusal(client, slots, outcome, headers, now)
        charges = tuple(
            Charge(slot.key, slot.period_s, state.window_end)
            for slot, state in zip(slots, outcome.states, strict=True)
            if slot.kind == "tokens"
        )
        reservation = TokenReservation(client, cost if charges else 0, headers, charges, windows)
        return Admission(headers, reservation)

    async def settle(self, reservation: TokenReservation, used: int | Usage) -> None:
        """Bring a reservation to what the request used (Usage.total): refund the rest, charge any excess.

        Returns once the settlement is applied, so that the client's next request sees it. Settlements go to Redis
        through the same pipeline as admissions: under load one round trip settles many answers. Never raises (Redis
        trouble is counted and logged); a second call is a no-op. The settlement is under way before the first await,
        so a cancelled caller (a client gone mid-stream) still gets its refund applied, and `aclose` waits for it.
        """
        if reservation.settled:
            return
        reservation.settled = True
        windows = reservation.windows
        delta = max(0, used.total if isinstance(used, Usage) else used) - reservation.cost
        if delta == 0 or not reservation.charges or windows is None:
            return
        may_fail = windows is self.windows and self.fallback is not None  # Redis, bounded by the timeout and circuit
        if may_fail and self._down:  # the window will expire on its own; a lost refund only holds budget until then
            return
        applied = windows.adjust(Settlement(reservation.charges, delta))
        if not may_fail:
            await asyncio.shield(applied)
            return
        applied.add_done_callback(_observe)  # its error, if it ends after our timeout, is not left unread
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.shield(applied)
        except REDIS_FAILURES as exc:
            self._failed(exc, "ratelimit")
            return
        self._answered()

    async def ping(self) -> bool:
        """For /health/ready: whether Redis answers within the timeout (true in memory). Never raises."""
        if self.fallback is None:
            return True
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.windows.ping()
        except REDIS_FAILURES as exc:
            self._failed(exc, "health")
            return False
        self._answered()
        return True

    async def aclose(self) -> None:
        """Wait for the settlements under way, then close what the limiter owns."""
        await self.windows.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()

    # -- Redis trouble

    def _may_call(self) -> bool:
        """Closed circuit: call Redis. Open: not before the retry time, then one caller at a time."""
        if not self._down:
            return True
        if self._probing or time.monotonic() < self._retry_at:
            return False
        self._probing = True
        return True

    async def _call(self, operation: Callable[[Windows], Awaitable[T]]) -> tuple[T, Windows]:
        if self.fallback is None:
            return await operation(self.windows), self.windows
        if not self._may_call():
            return await self._degraded(operation, self.fallback)
        probe = self._down
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await operation(self.windows)
        except REDIS_FAILURES as exc:
            self._failed(exc, "ratelimit")
            return await self._degraded(operation, self.fallback)
        finally:
            if probe:
                self._probing = False
        self._answered()
        return result, self.windows

    async def _degraded(self, operation: Callable[[Windows], Awaitable[T]], fallback: Windows) -> tuple[T, Windows]:
        if self.fail_mode == "closed":
            retry_after = errors.retry_after_seconds(self._retry_at, time.monotonic())
            raise errors.Overloaded(
                "Rate limiting is unavailable. Try again shortly.", headers={"Retry-After": str(retry_after)}
            )
        return await operation(fallback), fallback

    def _failed(self, exc: BaseException, operation: str) -> None:
        metrics.REDIS_ERRORS.labels(operation=operation).inc()
        metrics.REDIS_UP.set(0)
        self._retry_at = time.monotonic() + self.retry_interval_s
        if not self._down:
            self._down = True
            # The exception's type only: its text may carry the address, and the URL may carry a password.
            logger.warning(
                "Redis did not answer (%s): rate limits %s until it does",
                type(exc).__name__,
                "hold per process" if self.fail_mode == "open" else "refuse requests with 503",
            )

    def _answered(self) -> None:
        metrics.REDIS_UP.set(1)
        if self._down:
            self._down = False
            logger.info("Redis answers again: rate limits are shared again")


def _observe(applied: asyncio.Future[Any]) -> None:
    """Retrieve a settlement's error even when its caller stopped waiting (timed out): asyncio would log it."""
    if not applied.cancelled():
        applied.exception()
