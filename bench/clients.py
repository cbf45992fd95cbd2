"""The upstream HTTP clients compared (issue 12, item 4): the gateway run once with each `UPSTREAM_HTTP_CLIENT`, side
by side in one run, on `/v1/messages`. The figures of each, and aiohttp's over the builtin's from the same run (robust
to a machine others are using: both were measured within a minute of each other under the same load).

The phase itself is `Run._clients` (bench/run.py); this module names the clients, turns its measurements into
figures and ratios, and prints them.
"""

from __future__ import annotations

from typing import Any

from bench.report import _fmt

# The default first: ratios are the other over it.
CLIENTS = ("builtin", "aiohttp")
# The order of the closed- and open-loop measurements: each client early and late (ABBA), so that a drift in what the
# rest of the machine takes affects both alike.
ORDER = (*CLIENTS, *reversed(CLIENTS))

# (key, label, unit, better): what each figure is, and whether higher or lower is better.
FIGURES = [
    ("throughput_unpaced_rps", "throughput at {clients} clients, unpaced", "req/s", "higher"),
    ("throughput_vs_reference", "  / the reference's /chat, same load", "x", "higher"),
    ("cpu_ms_per_request", "CPU per request (unpaced closed loop)", "ms", "lower"),
    ("added_p50_ms", "added latency p50 at {rate} req/s", "ms", "lower"),
    ("added_p99_ms", "added latency p99 at {rate} req/s", "ms", "lower"),
    ("open_loop_cpu_ms_per_request", "CPU per request (open loop)", "ms", "lower"),
    ("ttft_p99_ms", "TTFT p99, {steady}", "ms", "lower"),
    ("added_ttft_p99_ms", "added TTFT p99, {steady}", "ms", "lower"),
    ("kib_per_stream", "memory per open stream, {many}", "KiB", "lower"),
    ("completed", "streams complete, {many}", "", "higher"),
]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _mean(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known) / len(known), 3) if known and len(known) == len(values) else None


def figures(
    *,
    closed: list[dict[str, Any]],
    open_loop: list[dict[str, Any]],
    simulator_open_loop: dict[str, Any],
    steady: dict[str, Any],
    simulator_steady_ttft_p99_ms: float | None,
    many: dict[str, Any],
    reference_rps: float | None,
) -> dict[str, Any]:
    """One client's figures from its measurements (rows as `bench.measure` returns them): the closed-loop windows
    pooled (their requests over their time, their CPU over their requests), the open-loop windows' percentiles
    averaged."""
    requests = sum(row["requests"] for row in closed)
    seconds = sum(row["duration_s"] for row in closed)
    cpu_s = sum(row["cost"]["servers"][row["server"]]["cpu_s"] for row in closed)
    throughput = round(requests / seconds, 1) if seconds else None
    base = simulator_open_loop["latency_ms"]
    return {
        "throughput_unpaced_rps": throughput,
        "throughput_vs_reference": _ratio(throughput, reference_rps),
        "cpu_ms_per_request": round(cpu_s / requests * 1000.0, 3) if requests else None,
        "added_p50_ms": _mean([_minus(row["latency_ms"]["p50"], base["p50"]) for row in open_loop]),
        "added_p99_ms": _mean([_minus(row["latency_ms"]["p99"], base["p99"]) for row in open_loop]),
        "open_loop_cpu_ms_per_request": _mean([row["cost"]["cpu_ms_per_unit"] for row in open_loop]),
        "ttft_p99_ms": steady["ttft_ms"]["p99"],
        "added_ttft_p99_ms": _minus(steady["ttft_ms"]["p99"], simulator_steady_ttft_p99_ms),
        "kib_per_stream": many["kib_per_stream"],
        "completed": f"{many['completed']}/{many['streams']}",
    }


def ratios(by_client: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each other client's figure over the builtin's (numbers only): above 1 is more, for better or worse (see
    FIGURES for which way is better)."""
    base = by_client[CLIENTS[0]]["figures"]
    out: dict[str, float | None] = {}
    for client in CLIENTS[1:]:
        theirs = by_client[client]["figures"]
        for key, _, _, _ in FIGURES:
            if isinstance(base.get(key), (int, float)) and isinstance(theirs.get(key), (int, float)):
                out[f"{client} / {CLIENTS[0]}: {key}"] = _ratio(theirs[key], base[key])
    return out


def print_clients(comparison: dict[str, Any]) -> None:
    context = {
        "clients": comparison["connections"],
        "rate": comparison["rate_rps"],
        "steady": comparison["steady"],
        "many": comparison["many"],
    }
    header = f"  {'figure (/v1/messages)':46}" + "".join(f"{client:>11}" for client in CLIENTS)
    header += "".join(f"{client + '/' + CLIENTS[0]:>18}" for client in CLIENTS[1:]) + "  better"
    print("\nUpstream HTTP clients, side by side (UPSTREAM_HTTP_CLIENT)")
    print(header)
    by_client = comparison["by_client"]
    for key, label, unit, better in FIGURES:
        values = [by_client[client]["figures"].get(key) for client in CLIENTS]
        line = f"  {(label.format(**context) + (f' ({unit})' if unit else '')):46}"
        line += "".join(_fmt(value, 11, 2) for value in values)
        for client in CLIENTS[1:]:
            line += _fmt(comparison["ratios"].get(f"{client} / {CLIENTS[0]}: {key}"), 18, 3)
        print(line + f"  {better}")
    print(
        f"  (reference /chat unpaced: {comparison['reference_unpaced_rps']} req/s; open loop at half the builtin's "
        f"paced peak of {comparison['builtin_paced_peak_rps']} req/s; simulator TTFT p99 "
        f"{comparison['simulator_steady_ttft_p99_ms']} ms)"
    )
