"""`RateLimiter`: per-client request and token limits, and what happens when Redis does not answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypeVar

from limits import RateLimitItem
from redis.asyncio import Redis
from redis.exceptions import RedisError

from claude_gateway import errors, metrics
from claude_gateway.budgets import NO_BUDGET, Budget
from claude_gateway.ratelimit.quota import LimitHeaders, Quota, refusal_headers, tightest
from claude_gateway.ratelimit.spend import (
    BUDGET_KEY_GRACE_S,
    CalendarWindow,
    UsageRecord,
    WindowUsage,
    budget_key,
    current_windows,
    format_usd,
    from_micro_usd,
    to_micro_usd,
)
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
    """429 from our own limits; `limit` says which kind refused (``requests``, ``tokens`` or ``budget``)."""

    def __init__(self, limit: LimitKind, message: str, *, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.limit: LimitKind = limit


@dataclass(slots=True, eq=False)
class TokenReservation:
    """Tokens (and micro-USD of budget) held for one request until `RateLimiter.settle` brings them to its real
    usage and cost."""

    client: str
    cost: int
    spend: int = 0  # micro-USD held against the key's budgets
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


def _budget_slots(client: str, budget: Budget, spend: int, now: float) -> list[Slot]:
    """One slot per calendar window the key has a budget in; its counter outlives the window by a grace period."""
    slots = []
    for window in current_windows():
        amount = budget.day if window.name == "day" else budget.month
        if amount is None:
            continue
        slots.append(
            Slot(
                kind="budget",
                key=budget_key(window, client),
                amount=to_micro_usd(amount),
                period_s=max(1, int(window.ends_at_s - now)) + BUDGET_KEY_GRACE_S,
                cost=spend,
                description=f"{'Daily' if window.name == 'day' else 'Monthly'} budget of {format_usd(amount)}",
                calendar=window,
            )
        )
    return slots


def _reset_at(slot: Slot, state: SlotState, now: float) -> float:
    """When the slot's window resets: a budget's at the end of its calendar window, a fixed window's by its TTL."""
    return slot.calendar.ends_at_s if slot.calendar is not None else now + state.reset_in_s


class _BudgetGauges:
    """`claude_gateway_budget_used_ratio{client,window}`: what each budget's current window holds (spent, reserved,
    or in debt) over its amount. When a calendar window ends, the ratios this process showed for it go to 0 (the new
    window holds nothing yet), so that an exhausted budget's alert does not outlive its window."""

    def __init__(self) -> None:
        self._shown: set[tuple[str, str]] = set()
        self._periods: dict[str, str] = {}

    def roll(self) -> None:
        """Called on every admission: cheap, as the current windows are worked out once a day."""
        for window in current_windows():
            previous = self._periods.get(window.name)
            if previous == window.period:
                continue
            self._periods[window.name] = window.period
            if previous is not None:
                for client, name in self._shown:
                    if name == window.name:
                        metrics.BUDGET_USED_RATIO.labels(client=client, window=name).set(0)

    def show(self, client: str, slot: Slot | Charge, count: int) -> None:
        calendar = slot.calendar
        if calendar is None or slot.amount <= 0 or self._periods.get(calendar.name) != calendar.period:
            return  # not a budget, or a window that has ended since its reservation was made
        self._shown.add((client, calendar.name))
        metrics.BUDGET_USED_RATIO.labels(client=client, window=calendar.name).set(count / slot.amount)


_budget_gauges = _BudgetGauges()


def _quotas(slots: Sequence[Slot], states: Sequence[SlotState], kind: LimitKind, now: float) -> list[Quota]:
    return [
        Quota.of(slot.amount, state.used, now + state.reset_in_s, now)
        for slot, state in zip(slots, states, strict=True)
        if slot.kind == kind
    ]


def _budget_refusal(
    client: str, too_big: Slot | None, spent: Sequence[Slot], headers: LimitHeaders, now: float
) -> LimitExceeded:
    """429 for a budget: one this request could never fit (`too_big`), else a spent one (the month's when both are:
    it resets last). Either way an SDK's retry is futile: `x-should-retry: false`."""
    metrics.RATE_LIMITED.labels(client=client, limit="budget").inc()
    slot = too_big or max(spent, key=lambda budget: budget.calendar.ends_at_s if budget.calendar else 0.0)
    resets_at = slot.calendar.ends_at_s if slot.calendar is not None else now
    resets_at_text = slot.calendar.resets_at_text if slot.calendar is not None else "the end of its window"
    if too_big is not None:
        message = (
            f"This request may cost up to ${from_micro_usd(slot.cost):.4f}, more than this key's "
            f"{slot.description[0].lower()}{slot.description[1:]} allows: lower max_tokens or shorten the input"
        )
    else:
        message = f"{slot.description} for this key is spent; it resets at {resets_at_text}"
    wait_s = errors.retry_after_seconds(resets_at, now)
    return LimitExceeded("budget", message, headers=refusal_headers(headers, wait_s, retryable=False))


def _refusal(client: str, slots: Sequence[Slot], outcome: Outcome, headers: LimitHeaders, now: float) -> LimitExceeded:
    refused = [
        (slot, Quota.of(slot.amount, state.used, _reset_at(slot, state, now), now))
        for slot, state in zip(slots, outcome.states, strict=True)
        if state.used + slot.cost > slot.amount
    ]
    retry_after_s = max(quota.reset_after_s for _, quota in refused)
    # A cost above a limit's whole amount can never pass: that is the answer, whatever else refused.
    too_big = [slot for slot, _ in refused if slot.cost > slot.amount]
    # Then a spent budget: it lasts until its calendar window ends, whatever a shorter limit says.
    budgets = [slot for slot, _ in refused if slot.kind == "budget"]
    if (too_big and too_big[0].kind == "budget") or (budgets and not too_big):
        return _budget_refusal(client, too_big[0] if too_big else None, budgets, headers, now)
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
        budget: Budget = NO_BUDGET,
        spend: int = 0,
    ) -> Admission:
        """All at once, all or nothing, one round trip: the request limits, `cost` tokens against the token limits,
        and `spend` micro-USD against the key's budgets (a request refused for one is not counted by the others).
        A key with a budget is checked against it even when `spend` is 0 (an unpriced model): a spent budget
        refuses everything."""
        _budget_gauges.roll()
        now = time.time()
        slots = _slots("requests", client, requests, REQUEST_COST)
        if cost > 0:
            slots += _slots("tokens", client, tokens, cost)
        if budget.limited:
            slots += _budget_slots(client, budget, max(0, spend), now)
        if not slots:
            return Admission(LimitHeaders(), TokenReservation(client, 0))
        outcome, windows = await self._call(lambda backend: backend.acquire(slots))
        now = time.time()
        headers = LimitHeaders(
            requests=tightest(_quotas(slots, outcome.states, "requests", now)),
            tokens=tightest(_quotas(slots, outcome.states, "tokens", now)),
        )
        for slot, state in zip(slots, outcome.states, strict=True):
            _budget_gauges.show(client, slot, state.used)
        if not outcome.admitted:
            raise _refusal(client, slots, outcome, headers, now)
        charges = tuple(
            Charge(slot.key, slot.period_s, state.window_end, slot.kind, slot.amount, slot.calendar)
            for slot, state in zip(slots, outcome.states, strict=True)
            if slot.kind != "requests"
        )
        held_tokens = cost if any(charge.kind == "tokens" for charge in charges) else 0
        held_spend = spend if any(charge.kind == "budget" for charge in charges) else 0
        reservation = TokenReservation(client, held_tokens, held_spend, headers, charges, windows)
        return Admission(headers, reservation)

    async def settle(
        self,
        reservation: TokenReservation,
        used: int | Usage,
        *,
        model: str | None = None,
        cost: Decimal | None = None,
        calls: int = 1,
    ) -> None:
        """Bring a reservation to what the request used (Usage.total) and cost (`cost`, USD; None: nothing, as for
        an unpriced model): refund the rest, charge any excess, even past a limit (the window is then in debt and
        refuses until it resets). Given the `model` (its bounded label) and a `Usage`, the usage (and `calls`) is
        added to the client's records for today and this month, in the same script call.

        Returns once the settlement is applied, so that the client's next request sees it. Settlements go to Redis
        through the same pipeline as admissions: under load one round trip settles many answers. Never raises (Redis
        trouble is counted and logged); a second call is a no-op. The settlement is under way before the first await,
        so a cancelled caller (a client gone mid-stream) still gets its refund applied, and `aclose` waits for it.
        """
        if reservation.settled:
            return
        reservation.settled = True
        tokens = max(0, used.total if isinstance(used, Usage) else used)
        spent = to_micro_usd(cost) if cost is not None and cost > 0 else 0
        adjustments = []
        for charge in reservation.charges:
            delta = spent - reservation.spend if charge.kind == "budget" else tokens - reservation.cost
            if delta != 0:
                adjustments.append((charge, delta))
        record = None
        if model is not None and isinstance(used, Usage) and (used.total or spent):
            counts = (used.input, used.output, used.cache_read, used.cache_write, spent, calls)
            record = UsageRecord(reservation.client, model, counts, current_windows())
        if not adjustments and record is None:
            return
        windows = reservation.windows or self._current_windows()
        if windows is None:
            return
        may_fail = windows is self.windows and self.fallback is not None  # Redis, bounded by the timeout and circuit
        if may_fail and self._down:  # the window will expire on its own; a lost refund only holds budget until then
            return
        charged = [charge for charge, _ in adjustments]
        applied = windows.adjust(Settlement(adjustments, record))
        if not may_fail:
            self._show_settled(reservation.client, charged, await asyncio.shield(applied))
            return
        applied.add_done_callback(_observe)  # its error, if it ends after our timeout, is not left unread
        try:
            async with asyncio.timeout(self.timeout_s):
                counts_after = await asyncio.shield(applied)
        except REDIS_FAILURES as exc:
            self._failed(exc, "ratelimit")
            return
        self._answered()
        self._show_settled(reservation.client, charged, counts_after)

    async def record_usage(self, client: str, model: str, usage: Usage, cost: Decimal, *, calls: int) -> None:
        """Add usage to the client's records without settling anything (a job's, settled apart). Never raises."""
        await self.settle(TokenReservation(client, 0), usage, model=model, cost=cost, calls=calls)

    @staticmethod
    def _show_settled(client: str, charged: Sequence[Charge], counts: Sequence[Any]) -> None:
        for charge, count in zip(charged, counts, strict=False):
            _budget_gauges.show(client, charge, int(count))

    def _current_windows(self) -> Windows | None:
        """Where a settlement that charged nothing records its usage: Redis, or memory while Redis is down (in
        fail-open mode; in fail-closed mode nothing, as nothing was served through memory)."""
        if self.fallback is None or not self._down:
            return self.windows
        return self.fallback if self.fail_mode == "open" else None

    async def read_usage(self, window: CalendarWindow, client: str | None) -> WindowUsage:
        """The usage recorded in `window` for `client` (None: every client); Redis trouble as for admissions."""
        usage, _ = await self._call(lambda backend: backend.read_usage(window, client))
        return usage

    async def count(self, key: str) -> int:
        """A counter's value (a budget's micro-USD held), Redis trouble as for admissions."""
        value, _ = await self._call(lambda backend: backend.count(key))
        return value

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
