"""Percentiles and summaries of latency samples (seconds in, milliseconds out)."""

from __future__ import annotations

import math
from collections.abc import Sequence

MS_PER_S = 1000.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, max and mean in milliseconds, with the sample count (None for each figure when empty)."""
    if not values_s:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values_s)
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 50) * MS_PER_S, 3),
        "p90": round(percentile(ordered, 90) * MS_PER_S, 3),
        "p99": round(percentile(ordered, 99) * MS_PER_S, 3),
        "max": round(ordered[-1] * MS_PER_S, 3),
        "mean": round(sum(ordered) / len(ordered) * MS_PER_S, 3),
    }


def lower_median(values: list[float | None]) -> float | None:
    """The median (the lower of the middle two of an even count), None sorting last; None when there is nothing."""
    if not values:
        return None
    ranked = sorted(values, key=lambda value: float("inf") if value is None else value)
    return ranked[(len(ranked) - 1) // 2]
