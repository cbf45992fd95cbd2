"""Spend budgets per client key, in USD per UTC calendar window (parsed here; enforced by the limiter).

In the keys file, `budget_usd: {day: 20, month: 400}` (either may be left out); a key without one takes
`BUDGET_USD_DAY` / `BUDGET_USD_MONTH`. `budget_usd: {day: null}` lifts a default for that key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from claude_gateway.settings import Settings, parse_usd

WINDOWS = ("day", "month")


class BudgetError(ValueError):
    """A `budget_usd` in the keys file that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Budget:
    """USD a key may spend per UTC day and per UTC month; None: no budget in that window."""

    day: Decimal | None = None
    month: Decimal | None = None

    @property
    def limited(self) -> bool:
        return self.day is not None or self.month is not None


NO_BUDGET = Budget()


def default_budget(settings: Settings) -> Budget:
    return Budget(day=settings.budget_usd_day, month=settings.budget_usd_month)


def parse_budget(entry: Mapping[str, Any], default: Budget) -> Budget:
    """The entry's `budget_usd`, each window not given taken from `default`."""
    if "budget_usd" not in entry:
        return default
    value = entry["budget_usd"]
    if not isinstance(value, Mapping):
        raise BudgetError("`budget_usd` must be a mapping such as {day: 20, month: 400}")
    unknown = sorted(set(value) - set(WINDOWS))
    if unknown:
        raise BudgetError(f"`budget_usd`: unknown window {unknown[0]!r} (expected day, month)")
    amounts: dict[str, Decimal | None] = {}
    for window in WINDOWS:
        if window not in value:
            amounts[window] = getattr(default, window)
            continue
        raw = value[window]
        if isinstance(raw, bool) or not (raw is None or isinstance(raw, int | float | str)):
            raise BudgetError(f"`budget_usd.{window}` must be a number of USD")
        try:
            amounts[window] = parse_usd(raw)
        except ValueError as exc:
            raise BudgetError(f"`budget_usd.{window}`: {exc}") from None
    return Budget(day=amounts["day"], month=amounts["month"])
