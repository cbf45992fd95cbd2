"""The figures a run produced: the targets the gateway must meet (PASS / FAIL, never failing the run), the
printed tables, and the ratios between servers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from bench.stats import lower_median

# The lead's targets (issue 6). Ratios are gateway / reference throughput against the unpaced upstream (answers at
# once): against the paced one, every server is held to clients / the upstream's latency, whatever its CPU cost.
CHAT_VS_REFERENCE_MIN = 1.0
MESSAGES_VS_REFERENCE_MIN = 2.5
ADDED_LATENCY_P50_MAX_MS = 2.0
ADDED_LATENCY_P99_MAX_MS = 10.0
ADDED_TTFT_STEADY_P99_MAX_MS = 5.0
ADDED_TTFT_BURST_P99_MAX_MS = 100.0
MEMORY_PER_STREAM_MAX_KIB = 32.0
GATEWAY_STREAM_ROUTES = ("/chat/stream", "/v1/messages")


@dataclass
class Check:
    name: str
    target: str
    measured: float | None
    status: str  # PASS, FAIL or N/A (not measured in this run)
    detail: str = ""


def _check(name: str, target: str, measured: float | None, ok: bool | None, detail: str = "") -> Check:
    status = "N/A" if measured is None or ok is None else ("PASS" if ok else "FAIL")
    return Check(name, target, None if measured is None else round(measured, 3), status, detail)


def find(rows: Iterable[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(key) == value for key, value in where.items()):
            return row
    return None


def _throughput(
    rows: list[dict[str, Any]], server: str, route: str, connections: int, upstream: str = "paced"
) -> float | None:
    row = find(rows, server=server, route=route, connections=connections, upstream=upstream)
    return None if row is None else float(row["throughput_rps"])


def _clients(rows: list[dict[str, Any]], upstream: str) -> list[int]:
    return sorted({row["connections"] for row in rows if row["upstream"] == upstream})


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def round_ratios(rounds: list[dict[str, float]], route: str) -> list[float | None]:
    """Each unpaced round's gateway `route` / reference `/chat` throughput (`Run._unpaced_rounds`)."""
    return [_ratio(measured[f"gateway {route}"], measured["reference /chat"]) for measured in rounds]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def evaluate(results: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    rows: list[dict[str, Any]] = results["nonstreaming"]
    top = max(_clients(rows, "unpaced"), default=0)
    rounds: list[dict[str, float]] = results.get("unpaced_rounds") or []
    for route, minimum in (("/chat", CHAT_VS_REFERENCE_MIN), ("/v1/messages", MESSAGES_VS_REFERENCE_MIN)):
        if rounds:
            # Each round's ratio, of measurements taken side by side; the median round's is the figure.
            by_round = round_ratios(rounds, route)
            ratio = lower_median(by_round)
            detail = f"the median of {len(by_round)} rounds: " + ", ".join(
                "-" if value is None else f"{value:.2f}x" for value in by_round
            )
        else:
            reference = _throughput(rows, "reference", "/chat", top, "unpaced")
            ratio = _ratio(_throughput(rows, "gateway", route, top, "unpaced"), reference)
            detail = ""
        checks.append(
            _check(
                f"gateway {route} vs reference /chat, throughput at {top} clients, unpaced upstream",
                f">= {minimum:g}x",
                ratio,
                None if ratio is None else ratio >= minimum,
                detail,
            )
        )
    for pair in results["open_loop"]:
        for quantile, limit in (("p50", ADDED_LATENCY_P50_MAX_MS), ("p99", ADDED_LATENCY_P99_MAX_MS)):
            added = pair["added_ms"].get(quantile)
            if pair.get("pairs"):
                differences = ", ".join(
                    "-" if one["added_ms"][quantile] is None else f"{one['added_ms'][quantile]:+.2f}"
                    for one in pair["pairs"]
                )
                detail = f"the median of {len(pair['pairs'])} pairs: {differences} ms"
            else:
                detail = (
                    f"gateway {pair['gateway']['latency_ms'][quantile]} ms, simulator "
                    f"{pair['simulator']['latency_ms'][quantile]} ms"
                )
            checks.append(
                _check(
                    f"added latency {quantile}, gateway {pair['route']} at {pair['rate_rps']:g} req/s (open loop)",
                    f"< {limit:g} ms",
                    added,
                    None if added is None else added < limit,
                    detail,
                )
            )
    streams: list[dict[str, Any]] = results["streams"]
    for role, limit in (("steady", ADDED_TTFT_STEADY_P99_MAX_MS), ("burst", ADDED_TTFT_BURST_P99_MAX_MS)):
        baseline = find(streams, server="simulator", role=role)
        for route in GATEWAY_STREAM_ROUTES:
            row = find(streams, server="gateway", route=route, role=role)
            # The steady scenario's gateway row carries the simulator measured just before it (the median of its
            # pairs, `run._median_pair`); the others compare with the simulator's row of the same scenario.
            paired = row.get("paired_simulator") if row else None
            simulator = paired if paired is not None else baseline
            added = _diff(row["ttft_ms"]["p99"] if row else None, simulator["ttft_ms"]["p99"] if simulator else None)
            label = row["scenario"] if row else role
            detail = (
                ""
                if row is None or simulator is None
                else f"gateway {row['ttft_ms']['p99']} ms, simulator {simulator['ttft_ms']['p99']} ms"
            )
            if row is not None and row.get("ttft_pairs"):
                each = ", ".join(f"{pair['added_p99_ms']:+.1f}" for pair in row["ttft_pairs"])
                detail += f" (the median of {len(row['ttft_pairs'])} pairs: {each} ms)"
            checks.append(
                _check(
                    f"added TTFT p99, gateway {route} stream, {label}",
                    f"< {limit:g} ms",
                    added,
                    None if added is None else added < limit,
                    detail,
                )
            )
    for route in GATEWAY_STREAM_ROUTES:
        row = find(streams, server="gateway", route=route, role="many")
        complete = None if row is None else row["completed"] / row["streams"]
        checks.append(
            _check(
                f"every stream complete, gateway {route}, {row['scenario'] if row else 'many streams'}",
                "100%",
                None if complete is None else 100.0 * complete,
                None if complete is None else complete == 1.0,
                "" if row is None else f"{row['completed']}/{row['streams']}; failures {row['failures']}",
            )
        )
        kib = None if row is None else row["kib_per_stream"]
        checks.append(
            _check(
                f"gateway memory per open stream, {route}, {row['scenario'] if row else 'many streams'}",
                f"< {MEMORY_PER_STREAM_MAX_KIB:g} KiB",
                kib,
                None if kib is None else kib < MEMORY_PER_STREAM_MAX_KIB,
                ""
                if row is None
                else f"{row['peak_open']} open, RSS {row['rss_idle_mib']} -> {row['rss_open_mib']} MiB",
            )
        )
    return checks


def checks_as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(check) for check in checks]


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Gateway over reference and over the simulator, per row kind; for the table and the JSON."""
    rows: list[dict[str, Any]] = results["nonstreaming"]
    out: dict[str, Any] = {"throughput": {}, "ttft_p99": {}}
    loads = [(connections, "paced") for connections in _clients(rows, "paced")]
    loads += [(connections, "unpaced") for connections in _clients(rows, "unpaced")]
    for connections, upstream in loads:
        reference = _throughput(rows, "reference", "/chat", connections, upstream)
        simulator = _throughput(rows, "simulator", "/v1/messages", connections, upstream)
        at = f"@{connections}" + (" unpaced" if upstream == "unpaced" else "")
        for route in ("/chat", "/v1/messages"):
            gateway = _throughput(rows, "gateway", route, connections, upstream)
            out["throughput"][f"gateway {route} / reference /chat {at}"] = _round(_ratio(gateway, reference))
            out["throughput"][f"gateway {route} / simulator {at}"] = _round(_ratio(gateway, simulator))
    rounds: list[dict[str, float]] = results.get("unpaced_rounds") or []
    if rounds:
        at = f"@{max(_clients(rows, 'unpaced'), default=0)} unpaced, the median of {len(rounds)} side-by-side rounds"
        for route in ("/chat", "/v1/messages"):
            out["throughput"][f"gateway {route} / reference /chat {at}"] = _round(
                lower_median(round_ratios(rounds, route))
            )
    streams: list[dict[str, Any]] = results["streams"]
    for scenario in dict.fromkeys(row["scenario"] for row in streams):
        reference_row = find(streams, server="reference", scenario=scenario)
        for route in GATEWAY_STREAM_ROUTES:
            row = find(streams, server="gateway", route=route, scenario=scenario)
            if row and reference_row:
                out["ttft_p99"][f"reference /chat/stream / gateway {route} stream, {scenario}"] = _round(
                    _ratio(reference_row["ttft_ms"]["p99"], row["ttft_ms"]["p99"])
                )
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- printing -------------------------------------------------------------------------------------------------------

# (heading, width) of each column; "other": cores the machine spent outside the servers and the load generator.
CLOSED_LOOP_COLUMNS = [
    ("server route", 28), ("upstream", 8), ("clients", 7), ("req/s", 8), ("ceiling", 8), ("p50 ms", 8), ("p99 ms", 8),
    ("errors", 6), ("cpu ms/req", 10), ("srv cores", 9), ("wrk cores", 9), ("other", 6),
]  # fmt: skip
OPEN_LOOP_COLUMNS = [
    ("gateway route", 16), ("req/s", 7), ("sim p50", 8), ("sim p99", 8), ("gw p50", 8), ("gw p99", 8),
    ("+p50 ms", 8), ("+p99 ms", 8), ("hdr p50", 8), ("hdr p99", 8), ("cpu ms/req", 10), ("client", 7), ("other", 6),
]  # fmt: skip
STREAM_COLUMNS = [
    ("server route", 30), ("scenario", 11), ("done", 9), ("ttft p50", 8), ("ttft p99", 8), ("itl p50", 8),
    ("itl p99", 8), ("KiB/strm", 8), ("cpu ms/strm", 11), ("srv cores", 9), ("client", 7), ("other", 6),
]  # fmt: skip


def _fmt(value: Any, width: int, digits: int = 1) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.{digits}f}"
    else:
        text = str(value)
    return text.rjust(width)


def _table(title: str, header: list[tuple[str, int]], lines: list[list[Any]]) -> None:
    print(f"\n{title}")
    print("  " + " ".join(name.rjust(width) if i else name.ljust(width) for i, (name, width) in enumerate(header)))
    for line in lines:
        cells = []
        for i, ((_, width), value) in enumerate(zip(header, line, strict=True)):
            cells.append(str(value).ljust(width) if i == 0 else _fmt(value, width))
        print("  " + " ".join(cells))


def print_report(results: dict[str, Any], checks: list[Check]) -> None:
    rows = results["nonstreaming"]
    _table(
        "Non-streaming, closed loop (wrk): throughput and latency",
        CLOSED_LOOP_COLUMNS,
        [
            [
                f"{row['server']} {row['route']}",
                row["upstream"],
                row["connections"],
                row["throughput_rps"],
                row["closed_loop_ceiling_rps"],
                row["latency_ms"]["p50"],
                row["latency_ms"]["p99"],
                sum(row["errors"].values()),
                row["cost"]["cpu_ms_per_unit"],
                row["cost"]["servers"][row["server"]]["cores"],
                row["cost"]["client_cores"],
                row["cost"]["unattributed_cores"],
            ]
            for row in rows
        ],
    )
    print(
        "  (ceiling: clients / the paced upstream's latency; unpaced: the simulator answers at once, so throughput is "
        "bounded by CPU)"
    )
    variants = results["reference_choice"]
    if variants["chosen"] is not None:
        print(
            f"\n  reference installs at {variants['connections']} clients, {variants['upstream']} upstream: "
            + ", ".join(f"{name} {rps} req/s" for name, rps in variants["throughput_rps"].items())
            + f" -> kept {variants['chosen']}"
        )
    for number, measured in enumerate(results.get("unpaced_rounds") or [], start=1):
        print(
            f"  unpaced round {number} at {variants['connections']} clients, side by side: "
            + ", ".join(f"{name} {rps} req/s" for name, rps in measured.items())
        )
    _table(
        "Non-streaming, open loop at a fixed rate: latency added to the simulator's",
        OPEN_LOOP_COLUMNS,
        [
            [
                pair["route"],
                pair["rate_rps"],
                pair["simulator"]["latency_ms"]["p50"],
                pair["simulator"]["latency_ms"]["p99"],
                pair["gateway"]["latency_ms"]["p50"],
                pair["gateway"]["latency_ms"]["p99"],
                pair["added_ms"]["p50"],
                pair["added_ms"]["p99"],
                (pair["gateway"]["gateway_reported_overhead_ms"] or {}).get("p50"),
                (pair["gateway"]["gateway_reported_overhead_ms"] or {}).get("p99"),
                pair["gateway"]["cost"]["cpu_ms_per_unit"],
                pair["gateway"]["cost"]["client_cores"],
                pair["gateway"]["cost"]["unattributed_cores"],
            ]
            for pair in results["open_loop"]
        ],
    )
    print("  (+p50/+p99: gateway minus simulator at the same rate; hdr: the gateway's own X-Gateway-Overhead-Ms)")
    _table(
        "Streams: time to first token, inter-token delay, memory per open stream",
        STREAM_COLUMNS,
        [
            [
                f"{row['server']} {row['route']}",
                row["scenario"],
                f"{row['completed']}/{row['streams']}",
                row["ttft_ms"]["p50"],
                row["ttft_ms"]["p99"],
                row["inter_token_ms"]["p50"],
                row["inter_token_ms"]["p99"],
                row["kib_per_stream"],
                row["cost"]["cpu_ms_per_unit"],
                row["cost"]["servers"][row["server"]]["cores"],
                row["cost"]["client_cores"],
                row["cost"]["unattributed_cores"],
            ]
            for row in results["streams"]
        ],
    )
    print("\nRatios")
    for kind, values in results["ratios"].items():
        for name, value in values.items():
            print(f"  {kind:10} {name:60} {_fmt(value, 6, 2)}")
    generator = results["load_generator"]
    print(
        f"\nLoad generator: wrk at most {generator['wrk_max_cores']} cores, the asyncio client at most "
        f"{generator['asyncio_max_cores']} cores (of {generator['machine_cores']}); the asyncio client's event loop "
        f"woke at worst {generator['asyncio_loop_lag_p99_ms_max']} ms late (p99 of a measurement)"
    )
    busy = results["meta"]["machine_busy_pct_before"]
    print(
        f"Machine CPU busy before the run: {busy}%; 'other' columns: cores used outside the servers and the load "
        "generator (other processes, unattributed kernel work): large values mean disturbed figures"
    )
    print("\nTargets")
    for check in checks:
        measured = "-" if check.measured is None else f"{check.measured:g}"
        print(f"  {check.status:4}  {check.name}: {measured} (target {check.target}) {check.detail}".rstrip())
