"""Closed-loop load with wrk: C connections, each sending its next request as soon as the last is answered."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import Target

SCRIPT = Path(__file__).with_name("wrk_post.lua")
_MARKER = "WRK_JSON "
US_PER_S = 1_000_000
MS_PER_US = 1 / 1000


class WrkMissing(RuntimeError):
    pass


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing("wrk not found (Debian: apt-get install -y wrk)")
    return found


@dataclass
class WrkResult:
    target: str
    connections: int
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    # CPU seconds wrk itself used (from the kernel's accounting of reaped children).
    client_cpu_s: float

    @property
    def throughput(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "connections": self.connections,
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": round(self.throughput, 1),
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "client_cpu_s": round(self.client_cpu_s, 3),
        }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_wrk(target: Target, *, connections: int, duration_s: float, threads: int, timeout_s: float) -> WrkResult:
    """One wrk run against `target`; wrk's CPU is measured as the growth of this process's reaped children's."""
    with tempfile.NamedTemporaryFile(prefix="cgw-bench-body-", suffix=".json", delete=False) as body_file:
        body_file.write(target.body)
    headers = [f"{name}: {value}" for name, value in (("Content-Type", "application/json"), *target.headers)]
    command = [
        wrk_binary(),
        "--threads", str(min(threads, connections)),
        "--connections", str(connections),
        "--duration", f"{max(1, round(duration_s))}s",
        "--timeout", f"{round(timeout_s)}s",
        "--script", str(SCRIPT),
        f"http://{target.host}:{target.port}{target.path}",
        "--", body_file.name, *headers,
    ]  # fmt: skip
    cpu_before = _children_cpu_s()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await process.communicate()
    except asyncio.CancelledError:  # the run was stopped: so is its load
        process.kill()
        await process.wait()
        raise
    finally:
        Path(body_file.name).unlink(missing_ok=True)
    client_cpu = _children_cpu_s() - cpu_before
    lines = [line for line in stdout.decode().splitlines() if line.startswith(_MARKER)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.decode().strip() or stdout.decode().strip()}")
    data = json.loads(lines[-1][len(_MARKER) :])
    latency = {name: round(value * MS_PER_US, 3) for name, value in data["latency_us"].items()}
    return WrkResult(
        target=target.name,
        connections=connections,
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / US_PER_S,
        errors={name: int(value) for name, value in data["errors"].items()},
        latency_ms=latency,
        client_cpu_s=client_cpu,
    )
