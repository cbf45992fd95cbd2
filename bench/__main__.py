"""`python -m bench [--smoke] [--out-dir DIR] [--profile | --no-profile] [--profile-only | --clients-only]`: see
bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench.chart import write_chart
from bench.clients import print_clients
from bench.config import FULL, SMOKE
from bench.report import checks_as_json, evaluate, print_report, ratios
from bench.run import Run

RESULTS_DIR = Path(__file__).with_name("results")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="claude-gateway benchmarks, side by side.")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny durations and concurrencies: checks the harness only"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the JSON, PNG and profiles go")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy profiles of the gateway and the reference under load (default: on, off with --smoke)",
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="only the profiles (about a minute): for an optimisation loop"
    )
    parser.add_argument(
        "--clients-only",
        action="store_true",
        help="only the upstream HTTP clients' comparison (about 3 minutes): the gateway with each "
        "UPSTREAM_HTTP_CLIENT on /v1/messages, and what it needs of the reference and the simulator",
    )
    return parser


def _load_generator(results: dict[str, Any]) -> dict[str, Any]:
    """The load generators' own CPU, to show they did not saturate the machine themselves."""
    wrk = [row["cost"]["client_cores"] or 0.0 for row in results["nonstreaming"]]
    asyncio_cores = [
        row["cost"]["client_cores"] or 0.0
        for row in [pair[side] for pair in results["open_loop"] for side in ("gateway", "simulator")]
        + results["streams"]
    ]
    lags = [
        row["cost"]["client_loop_lag_ms"]["p99"] or 0.0
        for row in [pair[side] for pair in results["open_loop"] for side in ("gateway", "simulator")]
        + results["streams"]
    ]
    return {
        "machine_cores": results["meta"]["machine_cores"],
        # The asyncio client's event loop lateness, worst p99 of any measurement: its timestamps' own error.
        "asyncio_loop_lag_p99_ms_max": round(max(lags, default=0.0), 3),
        "wrk_max_cores": round(max(wrk, default=0.0), 3),
        "wrk_cpu_s": round(sum(row["cost"]["client_cpu_s"] for row in results["nonstreaming"]), 3),
        "asyncio_max_cores": round(max(asyncio_cores, default=0.0), 3),
        "asyncio_cpu_s": round(
            sum(
                pair[side]["cost"]["client_cpu_s"] for pair in results["open_loop"] for side in ("gateway", "simulator")
            )
            + sum(row["cost"]["client_cpu_s"] for row in results["streams"]),
            3,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SMOKE if args.smoke else FULL
    out_dir: Path = args.out_dir
    stem = "bench-" + ("smoke-" if args.smoke else "") + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.profile_only and args.clients_only:
        raise SystemExit("bench: --profile-only and --clients-only exclude each other")
    default_profile = not args.smoke and not args.clients_only
    do_profile = args.profile_only or (default_profile if args.profile is None else args.profile)
    if args.clients_only:
        do_profile = False
    profile_dir = out_dir / f"{stem}-profiles" if do_profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)

    run = Run(
        config,
        smoke=args.smoke,
        profile_dir=profile_dir,
        profile_only=args.profile_only,
        clients_only=args.clients_only,
    )
    try:
        results = uvloop.run(run.execute())
    except asyncio.CancelledError:  # Ctrl-C or `kill`: `Run.execute` stopped its servers on the way out
        if run.stopped_by is None:
            raise
        print(f"bench: stopped by {run.stopped_by.name}", file=sys.stderr)
        return 128 + run.stopped_by
    results["ratios"] = ratios(results)
    results["load_generator"] = _load_generator(results)
    checks = evaluate(results)
    results["targets"] = checks_as_json(checks)
    chart_path = out_dir / f"{stem}.png"
    try:
        results["chart"] = str(write_chart(results, chart_path))
    except ImportError as exc:
        results["chart"] = None
        print(f"bench: no chart ({exc}); pip install matplotlib", file=sys.stderr)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.clients_only:
        print(f"Machine CPU busy before the run: {results['meta']['machine_busy_pct_before']}%")
    else:
        print_report(results, checks)
    if "clients" in results:
        print_clients(results["clients"])
    if isinstance(results.get("profile"), dict) and not results["profile"].get("skipped"):
        from bench.profile import print_summary

        print("\nWhere the CPU goes (py-spy)")
        for name, summary in results["profile"].items():
            if isinstance(summary, dict) and "samples" in summary:
                print_summary(name, summary)
    print(f"\nJSON: {json_path}\nchart: {results['chart']}")
    # Targets are reported, never enforced: a miss is the lead's to fix, not a broken run.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
