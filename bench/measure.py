"""One measurement at a time, with what it cost: every server's CPU (process tree, /proc), the machine's CPU use,
and the load generator's own CPU, taken before and after.

Each function returns a plain dict, the JSON the report is written from.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.config import StreamScenario
from bench.loadgen import FixedRateRun, StreamRun, Target, loop_lag, no_gc_pauses, run_fixed_rate, run_streams
from bench.procfs import MachineCpu, ServerTree, TreeSample
from bench.stats import summary_ms
from bench.targets import stream_format
from bench.wrk import run_wrk

KIB = 1024
MS_PER_S = 1000.0
# The gateway's own account of the time it adds to a non-streaming answer (docs: INTERFACE.md).
OVERHEAD_HEADER = b"x-gateway-overhead-ms"


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CostWindow:
    """CPU of each server (and of this process) between `start()` and `stop()`."""

    trees: Mapping[str, ServerTree]
    before: dict[str, TreeSample] | None = None
    machine_before: MachineCpu | None = None
    self_before: float = 0.0
    started: float = 0.0

    def start(self) -> None:
        self.before = {name: tree.cpu() for name, tree in self.trees.items()}
        self.machine_before = MachineCpu.read()
        self.self_before = _self_cpu_s()
        self.started = time.perf_counter()

    def stop(self, units: int, main_server: str) -> dict[str, Any]:
        """The costs; `units` (requests or streams) divides `main_server`'s CPU into a cost per unit."""
        assert self.before is not None
        assert self.machine_before is not None
        wall = time.perf_counter() - self.started
        machine = MachineCpu.read()
        busy = machine.busy_fraction_since(self.machine_before)
        servers: dict[str, Any] = {}
        for name, tree in self.trees.items():
            by_pid = tree.cpu().since(self.before[name])
            cpu = sum(by_pid.values())
            servers[name] = {
                "cpu_s": round(cpu, 3),
                "cores": round(cpu / wall, 2) if wall > 0 else 0.0,
                # How the work spread over the tree's processes (the root first): an idle worker shows here.
                "cpu_s_by_process": [round(by_pid[pid], 3) for pid in sorted(by_pid)],
            }
        main_cpu = servers[main_server]["cpu_s"] if main_server in servers else 0.0
        client_cpu = _self_cpu_s() - self.self_before
        return {
            "wall_s": round(wall, 3),
            "machine_busy_pct": round(100.0 * busy, 1),
            "machine_busy_s": round(machine.busy_seconds_since(self.machine_before), 3),
            "servers": servers,
            "cpu_ms_per_unit": round(main_cpu / units * MS_PER_S, 3) if units else None,
            "client_cpu_s": round(client_cpu, 3),
        }

    @staticmethod
    def account_rest(cost: dict[str, Any]) -> None:
        """CPU the machine spent outside the servers and the load generator: other processes (anything else
        running on this machine disturbs the figures) and kernel network work not charged to a process."""
        ours = sum(server["cpu_s"] for server in cost["servers"].values()) + cost["client_cpu_s"]
        rest = max(0.0, cost["machine_busy_s"] - ours)
        cost["unattributed_cpu_s"] = round(rest, 3)
        cost["unattributed_cores"] = round(rest / cost["wall_s"], 2) if cost["wall_s"] else None
        cost["client_cores"] = round(cost["client_cpu_s"] / cost["wall_s"], 3) if cost["wall_s"] else None


async def closed_loop(
    target: Target,
    server: str,
    trees: Mapping[str, ServerTree],
    *,
    connections: int,
    warmup_s: float,
    duration_s: float,
    threads: int,
    timeout_s: float,
    upstream_latency_s: float | None,
) -> dict[str, Any]:
    """wrk at `connections`, after a warm-up run at the same load that is thrown away. `upstream_latency_s` is the
    simulator's time per answer for `target`, None when it answers unpaced (at once)."""
    if warmup_s > 0:
        await run_wrk(target, connections=connections, duration_s=warmup_s, threads=threads, timeout_s=timeout_s)
    window = CostWindow(trees)
    window.start()
    result = await run_wrk(target, connections=connections, duration_s=duration_s, threads=threads, timeout_s=timeout_s)
    cost = window.stop(result.requests, server)
    # What the load generator spent is wrk's CPU here (this process only waited for it).
    cost["client_cpu_s"] = round(result.client_cpu_s, 3)
    CostWindow.account_rest(cost)
    return {
        "server": server,
        "route": target.path,
        "upstream": "unpaced" if upstream_latency_s is None else "paced",
        **result.as_dict(),
        # No server can answer faster than the simulator: C connections cannot exceed C / its latency.
        "closed_loop_ceiling_rps": None if upstream_latency_s is None else round(connections / upstream_latency_s, 1),
        "cost": cost,
    }


async def open_loop(
    target: Target,
    server: str,
    trees: Mapping[str, ServerTree],
    *,
    rate_per_s: float,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    window = CostWindow(trees)
    window.start()
    with no_gc_pauses():
        async with loop_lag() as lags:
            run: FixedRateRun = await run_fixed_rate(
                target,
                rate_per_s=rate_per_s,
                duration_s=duration_s,
                warmup_s=warmup_s,
                timeout_s=timeout_s,
                header_of_interest=OVERHEAD_HEADER,
            )
    cost = window.stop(len(run.latencies_s), server)
    CostWindow.account_rest(cost)
    cost["client_loop_lag_ms"] = summary_ms(lags)
    return {
        "server": server,
        "route": target.path,
        "target": target.name,
        "rate_rps": round(rate_per_s, 1),
        "achieved_rps": round(len(run.latencies_s) / run.wall_s, 1) if run.wall_s > 0 else 0.0,
        "requests": len(run.latencies_s),
        "statuses": {str(status): count for status, count in sorted(run.statuses.items())},
        "errors": run.errors,
        "connections_opened": run.connections_opened,
        "latency_ms": summary_ms(run.latencies_s),
        "gateway_reported_overhead_ms": summary_ms(run.header_values) if run.header_values else None,
        "cost": cost,
    }


async def streams(
    target: Target,
    server: str,
    trees: Mapping[str, ServerTree],
    scenario: StreamScenario,
    *,
    idle_rss: int,
    sample_every_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    """`scenario`'s streams against `target`; the RSS of `server`'s tree sampled while they are open."""
    tree = trees[server]
    pids = tree.pids()
    rss_before = tree.rss(pids)
    window = CostWindow(trees)
    window.start()
    with no_gc_pauses():
        async with loop_lag() as lags:
            run: StreamRun = await run_streams(
                target,
                stream_format(target),
                starts_s=scenario.starts(),
                timeout_s=timeout_s + scenario.stream_s,
                sample_rss=lambda: tree.rss(pids),
                sample_every_s=sample_every_s,
            )
    records = run.records
    completed = sum(1 for record in records if record.completed)
    cost = window.stop(len(records), server)
    CostWindow.account_rest(cost)
    cost["client_loop_lag_ms"] = summary_ms(lags)
    ttft = [value for record in records if (value := record.ttft_s) is not None]
    gaps = [gap for record in records for gap in record.gaps_s]
    failures = Counter(record.failed for record in records if record.failed is not None)
    memory = _memory_per_stream(run.samples, idle_rss)
    return {
        "server": server,
        "route": target.path,
        "target": target.name,
        "scenario": scenario.name,
        "role": scenario.role,
        "streams": scenario.count,
        "ramp_s": scenario.ramp_s,
        "tokens_per_stream": scenario.tokens,
        "tokens_per_s": scenario.tokens_per_s,
        "completed": completed,
        "failures": dict(failures.most_common()),
        "ttft_ms": summary_ms(ttft),
        "inter_token_ms": summary_ms(gaps),
        "rss_idle_mib": round(idle_rss / KIB / KIB, 1),
        "rss_before_mib": round(rss_before / KIB / KIB, 1),
        **memory,
        "wall_s": round(run.wall_s, 3),
        "cost": cost,
    }


def _memory_per_stream(samples: list[tuple[float, int, int]], idle_rss: int) -> dict[str, Any]:
    """Resident memory per open stream: the highest RSS seen while the most streams were open, less the server's
    idle RSS, over the streams open then."""
    if not samples:
        return {"peak_open": 0, "rss_open_mib": None, "kib_per_stream": None}
    peak_open = max(open_count for _, open_count, _ in samples)
    at_peak = [rss for _, open_count, rss in samples if open_count >= peak_open]
    rss_open = max(at_peak)
    per_stream = (rss_open - idle_rss) / peak_open if peak_open else None
    return {
        "peak_open": peak_open,
        "rss_open_mib": round(rss_open / KIB / KIB, 1),
        "kib_per_stream": round(per_stream / KIB, 1) if per_stream is not None else None,
    }
