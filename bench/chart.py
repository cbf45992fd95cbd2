"""The PNG: latency against load, non-streaming (p50 and p99 per client count) and streams (time to first token per
concurrent stream count), one line per server and route. matplotlib with the Agg backend (no display).

Non-streaming rows against the unpaced upstream are left out: one load each, measuring throughput, and their
latency (no upstream wait) is not comparable with the paced rows' on the same axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIGURE_SIZE_IN = (13.0, 5.0)
DPI = 110


def _series(
    rows: list[dict[str, Any]], x_key: str, y_key: str
) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """label -> (x, p50, p99), x sorted; streams opened all at once are a series of their own."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        latency = row[y_key]
        if latency["p50"] is None:
            continue
        label = f"{row['server']} {row['route']}" + (" (all at once)" if row.get("role") == "burst" else "")
        series.setdefault(label, []).append((float(row[x_key]), latency["p50"], latency["p99"]))
    out = {}
    for label, points in series.items():
        points.sort()
        out[label] = ([p[0] for p in points], [p[1] for p in points], [p[2] for p in points])
    return out


def write_chart(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, LogLocator, NullLocator, ScalarFormatter

    figure, (left, right) = plt.subplots(1, 2, figsize=FIGURE_SIZE_IN)
    paced = [row for row in results["nonstreaming"] if row["upstream"] == "paced"]
    panels = (
        (left, _series(paced, "connections", "latency_ms"), "concurrent clients (closed loop)",
         "latency (ms)", "Non-streaming: latency against load (paced upstream)"),
        (right, _series(results["streams"], "streams", "ttft_ms"), "concurrent streams",
         "time to first token (ms)", "Streams: time to first token against load"),
    )  # fmt: skip
    for axes, series, x_label, y_label, title in panels:
        xs: set[float] = set()
        for index, (label, (x, p50, p99)) in enumerate(sorted(series.items())):
            color = f"C{index}"
            axes.plot(x, p50, marker="o", color=color, label=f"{label} p50")
            axes.plot(x, p99, marker="^", linestyle="--", color=color, label=f"{label} p99")
            xs.update(x)
        axes.set_xscale("log")
        axes.set_yscale("log")
        # Plain numbers on both axes, and a tick at each load that was measured.
        axes.xaxis.set_major_locator(FixedLocator(sorted(xs)))
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        for axis in (axes.xaxis, axes.yaxis):
            axis.set_minor_locator(NullLocator())
        for axis in (axes.xaxis, axes.yaxis):
            formatter = ScalarFormatter()
            formatter.set_scientific(False)
            axis.set_major_formatter(formatter)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="x-small")
    figure.suptitle(f"claude-gateway bench ({results['meta']['started_at']}, {results['meta']['machine_cores']} cores)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
