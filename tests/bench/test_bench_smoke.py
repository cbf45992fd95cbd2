"""`python -m bench --smoke`: the benchmark harness end to end, on tiny loads. Asserts that every section of the JSON
is there and filled, and that the chart was drawn; never asserts a speed (the figures of a smoke run mean nothing)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.config import SMOKE

from tests.support.programs import in_ci, require_program

REPO = Path(__file__).resolve().parents[2]
# Server start-ups (the gateway seven times, the reference three times) and about fifty one-second loads.
SMOKE_TIMEOUT_S = 300
SECTIONS = (
    "meta",
    "nonstreaming",
    "reference_choice",
    "reference_installs",
    "unpaced_rounds",
    "open_loop",
    "streams",
    "profile",
    "ratios",
    "load_generator",
    "targets",
    "chart",
    "gateway_log",
    "clients",
)

CLOSED_LOOP_ROUTES = (
    ("simulator", "/v1/messages"),
    ("gateway", "/chat"),
    ("gateway", "/v1/messages"),
    ("reference", "/chat"),
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)]


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        reason = "matplotlib is not installed (the bench draws its chart with it: add it to the dev dependencies)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so this is a failure")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    require_program("wrk", "the bench's closed-loop load generator")
    require_program("redis-server", "the gateway's limits live in Redis")
    out_dir = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-profile", "--out-dir", str(out_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    reports = sorted(out_dir.glob("bench-smoke-*.json"))
    assert len(reports) == 1, list(out_dir.iterdir())
    return json.loads(reports[0].read_text()), done.stdout


def test_every_section_is_written(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke_run
    assert set(SECTIONS) <= set(results)


def test_every_server_and_route_is_measured_closed_loop(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke_run
    measured = {(row["server"], row["route"], row["upstream"], row["connections"]) for row in results["nonstreaming"]}
    config = results["meta"]["config"]
    loads = [("paced", connections) for connections in config["concurrencies"]]
    loads.append(("unpaced", config["unpaced_connections"]))
    for server, route in CLOSED_LOOP_ROUTES:
        for upstream, connections in loads:
            assert (server, route, upstream, connections) in measured
    assert len(results["nonstreaming"]) == len(CLOSED_LOOP_ROUTES) * len(loads)
    for row in results["nonstreaming"]:
        assert row["requests"] > 0
        assert row["cost"]["servers"][row["server"]]["cpu_s"] >= 0
    assert set(results["reference_installs"]) == {"uvicorn", "gunicorn"}
    assert results["reference_choice"]["chosen"] in {"uvicorn", "gunicorn"}


def test_unpaced_rows_ask_for_an_answer_at_once_and_have_no_ceiling(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, stdout = smoke_run
    for row in results["nonstreaming"]:
        unpaced = row["upstream"] == "unpaced"
        assert row["target"].endswith(" unpaced") == unpaced
        assert (row["closed_loop_ceiling_rps"] is None) == unpaced
    for rows in results["reference_installs"].values():
        assert [row["upstream"] for row in rows].count("unpaced") == 1
    choice = results["reference_choice"]
    assert choice["upstream"] == "unpaced"
    assert choice["connections"] == results["meta"]["config"]["unpaced_connections"]
    assert choice["chosen"] == max(choice["throughput_rps"], key=choice["throughput_rps"].get)
    unpaced_ratios = [name for name in results["ratios"]["throughput"] if name.endswith(" unpaced")]
    assert len(unpaced_ratios) == 4
    assert "unpaced upstream" in stdout


def test_throughput_targets_compare_unpaced_rows(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke_run
    clients = results["meta"]["config"]["unpaced_connections"]
    names = [check["name"] for check in results["targets"] if "throughput" in check["name"]]
    assert names == [
        f"gateway /chat vs reference /chat, throughput at {clients} clients, unpaced upstream",
        f"gateway /v1/messages vs reference /chat, throughput at {clients} clients, unpaced upstream",
    ]
    for check in results["targets"]:
        if check["name"] in names:
            assert check["measured"] is not None
            assert check["status"] in {"PASS", "FAIL"}


def test_throughput_ratios_are_the_median_of_side_by_side_rounds(smoke_run: tuple[dict[str, Any], str]) -> None:
    """The ratios to the reference are read from rounds in which the gateway's routes and the reference are measured
    one after the other, not from the sweep's rows measured minutes apart."""
    results, printed = smoke_run
    rounds = results["unpaced_rounds"]
    assert len(rounds) == SMOKE.unpaced_rounds
    for measured in rounds:
        assert set(measured) == {"gateway /chat", "gateway /v1/messages", "reference /chat"}
        assert all(rps > 0 for rps in measured.values())
    for route in ("/chat", "/v1/messages"):
        (check,) = [c for c in results["targets"] if c["name"].startswith(f"gateway {route} vs reference")]
        by_round = sorted(r[f"gateway {route}"] / r["reference /chat"] for r in rounds)
        assert check["measured"] == pytest.approx(by_round[(len(by_round) - 1) // 2], abs=1e-3)
        assert f"the median of {len(rounds)} rounds" in check["detail"]
    assert "unpaced round 1" in printed


def test_open_loop_pairs_the_gateway_with_the_simulator(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke_run
    assert [pair["route"] for pair in results["open_loop"]] == ["/chat", "/v1/messages"]
    for pair in results["open_loop"]:
        assert pair["gateway"]["requests"] > 0
        assert pair["simulator"]["requests"] > 0
        assert pair["added_ms"]["p50"] is not None
        # The gateway reports its own overhead on every non-streaming answer.
        assert pair["gateway"]["gateway_reported_overhead_ms"]["n"] > 0
        # Each quantile's figure is the median of the pairs' differences.
        assert len(pair["pairs"]) == SMOKE.open_loop_pairs
        for quantile in ("p50", "p99"):
            differences = sorted(one["added_ms"][quantile] for one in pair["pairs"])
            assert pair["added_ms"][quantile] == differences[(len(differences) - 1) // 2]


def test_streams_have_ttft_memory_and_cpu_for_every_server(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke_run
    streams = results["streams"]
    targets = {row["target"] for row in streams}
    assert targets == {
        "simulator /v1/messages stream",
        "gateway /chat/stream",
        "gateway /v1/messages stream",
        "reference /chat/stream",
    }
    for row in streams:
        assert row["completed"] == row["streams"], row["failures"]
        assert row["ttft_ms"]["p50"] is not None
        assert row["peak_open"] > 0
        assert row["kib_per_stream"] is not None
        assert row["cost"]["cpu_ms_per_unit"] is not None


def test_the_steady_ttft_check_reads_the_median_of_adjacent_pairs(smoke_run: tuple[dict[str, Any], str]) -> None:
    """Each gateway route's steady scenario is measured in pairs with the simulator just before it; the row kept,
    and the check, are the median pair's."""
    results, printed = smoke_run
    for route in ("/chat/stream", "/v1/messages"):
        (row,) = [
            r for r in results["streams"] if r["server"] == "gateway" and r["route"] == route and r["role"] == "steady"
        ]
        pairs = row["ttft_pairs"]
        assert len(pairs) == SMOKE.steady_ttft_pairs
        added = sorted(pair["added_p99_ms"] for pair in pairs)
        median = added[(len(added) - 1) // 2]
        assert row["ttft_ms"]["p99"] - row["paired_simulator"]["ttft_ms"]["p99"] == pytest.approx(median)
        assert f"the median of {len(pairs)} pairs" in printed


def test_the_upstream_http_clients_are_compared_side_by_side(smoke_run: tuple[dict[str, Any], str]) -> None:
    """Every client's gateway measured on /v1/messages, every figure filled, and aiohttp's over the builtin's."""
    results, stdout = smoke_run
    comparison = results["clients"]
    assert comparison["clients"] == ["builtin", "aiohttp"]
    for client, measured in comparison["by_client"].items():
        assert measured["server"] == f"gateway-{client}"
        # Twice each, in the order builtin, aiohttp, aiohttp, builtin.
        assert [row["requests"] > 0 for row in measured["closed_loop_unpaced"]] == [True, True]
        assert [row["requests"] > 0 for row in measured["open_loop"]] == [True, True]
        assert all(row["completed"] == row["streams"] for row in measured["streams"])
        assert None not in measured["figures"].values(), measured["figures"]
    numeric = [
        key for key, value in comparison["by_client"]["builtin"]["figures"].items() if not isinstance(value, str)
    ]
    assert sorted(comparison["ratios"]) == sorted(f"aiohttp / builtin: {key}" for key in numeric)
    assert None not in comparison["ratios"].values()
    assert "Upstream HTTP clients, side by side" in stdout


def test_targets_are_reported_not_enforced(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, stdout = smoke_run
    statuses = {check["status"] for check in results["targets"]}
    assert statuses <= {"PASS", "FAIL", "N/A"}
    assert len(results["targets"]) >= 10
    assert "Targets" in stdout


def test_load_generator_cost_is_shown(smoke_run: tuple[dict[str, Any], str]) -> None:
    results, stdout = smoke_run
    generator = results["load_generator"]
    assert generator["wrk_cpu_s"] >= 0
    assert generator["asyncio_cpu_s"] > 0
    assert "Load generator" in stdout


def test_chart_is_a_png(smoke_run: tuple[dict[str, Any], str]) -> None:
    _require_matplotlib()
    results, _ = smoke_run
    assert Path(results["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
