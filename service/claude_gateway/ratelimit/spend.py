"""Spend in UTC calendar windows: budget counters and usage records, and where they live in Redis.

A budget window is a UTC calendar day or month: it ends at the next UTC midnight, or at 00:00 UTC on the first of
the next month, whenever the key's first charge came. Each window is its own key, named by the window's date, so
that every pod moves to the new window at the same instant without a reset step. Money is counted in integer
micro-USD (1 USD = 1 000 000), so that Lua's arithmetic on it is exact.

Keys (a client is named by its name, never by its key; a model by its bounded label, `metrics.model_label`):

    claude-gateway:budget:<window>:<date>:<client>                 string: micro-USD charged (reservations included)
    claude-gateway:usage:<window>:<date>:<client>:<model>          hash: input, output, cache_read, cache_write,
                                                                         cost_micro_usd, requests
    claude-gateway:usage:<window>:<date>:<client>:models           set: the models with a hash above
    claude-gateway:usage:<window>:<date>:clients                   set: the clients with usage in the window
    e.g. claude-gateway:budget:day:2026-12-06:billing-service, claude-gateway:usage:month:2026-12:billing-service:models

<window> is `day` (date 2026-12-06) or `month` (2026-12). A budget counter expires BUDGET_KEY_GRACE_S after its
window ends, usage keys USAGE_KEPT_PAST_WINDOW_S after it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Literal

WindowName = Literal["day", "month"]
CALENDAR_WINDOWS: tuple[WindowName, ...] = ("day", "month")

BUDGET_PREFIX = "claude-gateway:budget"
USAGE_PREFIX = "claude-gateway:usage"
MICRO_USD_PER_USD = 1_000_000
# A budget counter outlives its window by this much: a pod whose clock runs a little behind Redis's, or a request
# that settles just after midnight, still finds the counter it charged (its date is in the key, so nothing else
# ever reads it after the window ends).
BUDGET_KEY_GRACE_S = 3600
# Usage is kept a week past its window, for a late look at yesterday or last month (the endpoint shows the current
# windows only); long enough for an operator, short enough that Redis holds ~40 day-windows per client and model.
USAGE_KEPT_PAST_WINDOW_S = 7 * 24 * 3600
# The fields of a usage hash, in the order the settlement script takes them.
USAGE_FIELDS = ("input", "output", "cache_read", "cache_write", "cost_micro_usd", "requests")


@dataclass(frozen=True, slots=True)
class CalendarWindow:
    """One UTC day or month: `period` names it in keys (`2026-12-06`, `2026-12`); it ends at `ends_at`."""

    name: WindowName
    period: str
    ends_at: datetime

    @property
    def ends_at_s(self) -> float:
        return self.ends_at.timestamp()

    @property
    def resets_at_text(self) -> str:
        """`2026-12-07T00:00:00Z`: when the window ends, as a refusal names it."""
        return self.ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def calendar_window(name: WindowName, now: datetime) -> CalendarWindow:
    """The UTC day or month that `now` (timezone-aware) falls in."""
    now = now.astimezone(UTC)
    if name == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return CalendarWindow("day", start.strftime("%Y-%m-%d"), start + timedelta(days=1))
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return CalendarWindow("month", start.strftime("%Y-%m"), end)


_current: tuple[CalendarWindow, ...] = ()


def current_windows(now: datetime | None = None) -> tuple[CalendarWindow, ...]:
    """Today and this month (UTC). Without `now`, worked out once a day: every admission and settlement asks."""
    global _current
    if now is None:
        if _current and time.time() < _current[0].ends_at_s:
            return _current
        _current = tuple(calendar_window(name, datetime.now(UTC)) for name in CALENDAR_WINDOWS)
        return _current
    return tuple(calendar_window(name, now) for name in CALENDAR_WINDOWS)


def to_micro_usd(amount: Decimal) -> int:
    """USD as whole micro-USD, rounded up (a cost is never under-counted; a budget's amount is exact anyway)."""
    return int((amount * MICRO_USD_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def from_micro_usd(amount: int) -> Decimal:
    return Decimal(amount) / MICRO_USD_PER_USD


def format_usd(amount: Decimal) -> str:
    """A budget as a refusal names it: `$20.00`, `$0.05`, and `$0.001` (never rounded to `$0.00`)."""
    cents = amount.quantize(Decimal("0.01"))
    return f"${cents}" if cents == amount else f"${amount.normalize():f}"


def budget_key(window: CalendarWindow, client: str) -> str:
    return f"{BUDGET_PREFIX}:{window.name}:{window.period}:{client}"


def usage_key(window: CalendarWindow, client: str, model: str) -> str:
    return f"{USAGE_PREFIX}:{window.name}:{window.period}:{client}:{model}"


def usage_models_key(window: CalendarWindow, client: str) -> str:
    return f"{USAGE_PREFIX}:{window.name}:{window.period}:{client}:models"


def usage_clients_key(window: CalendarWindow) -> str:
    return f"{USAGE_PREFIX}:{window.name}:{window.period}:clients"


def usage_expires_at_s(window: CalendarWindow) -> int:
    return int(window.ends_at_s) + USAGE_KEPT_PAST_WINDOW_S


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one settlement adds to a client's usage in each current calendar window (`counts` in USAGE_FIELDS
    order: tokens by direction, micro-USD, calls)."""

    client: str
    model: str  # the bounded label
    counts: tuple[int, ...]
    windows: Sequence[CalendarWindow]


# {client: {model: {field: count}}} for one calendar window.
WindowUsage = dict[str, dict[str, dict[str, int]]]
