"""Where a server's CPU goes: py-spy samples its worker processes under load, and the collapsed stacks it writes
(`--format raw`: `frame;frame;...;frame count` per line, outermost first) are summed here three ways:

- self: the function on top of the stack (time in C calls is charged to the Python function that made them);
- inclusive: every function on the stack, once per sample, leaving out the frames every request passes through
  (process start-up, the event loop's run), which would top the list and say nothing; and the same for the
  application's own functions only (the gateway's, or the reference's), which says which of its steps costs what;
- layers: each sample charged to the nearest frame, from the top of the stack down, that belongs to a known part
  of the stack (the HTTP server, FastAPI and pydantic, OpenTelemetry, Prometheus, the Redis client, the Anthropic
  SDK and its HTTP client, the gateway's own code, ...), passing over the generic ones (asyncio, anyio, contextlib,
  ...), so that a socket write inside the SDK's HTTP client counts as the upstream client's.

Only samples of running Python code are counted (py-spy leaves idle threads out), so percentages are shares of the
CPU the workers spent, not of wall time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLES_PER_S = 100
TOP_FUNCTIONS = 15
# A frame as py-spy writes it: `function (path/to/file.py:line)`.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_SITE_PACKAGES = "site-packages/"
_STDLIB = re.compile(r"/lib/python3\.\d+/")
_REPO_DIRS = ("/service/", "/bench/")
# Modules that only carry work for their caller: a sample on top of them is charged to the nearest caller that is
# not one of them.
GENERIC = frozenset(
    {
        "asyncio", "anyio", "sniffio", "contextlib", "typing", "enum", "inspect", "functools", "abc", "collections",
        "_collections_abc", "copy", "dataclasses", "weakref", "threading", "selectors", "socket", "ssl", "types",
        "re", "uvloop", "stdlib", "runpy", "importlib", "<frozen>", "http", "urllib", "ipaddress", "email",
        "base64", "hashlib", "hmac", "uuid", "random", "time", "datetime", "string", "operator", "itertools",
    }
)  # fmt: skip
UPSTREAM_LAYER = "upstream client (anthropic SDK and its HTTP client)"
# Package -> the layer a report names.
LAYERS = {
    "uvicorn": "HTTP server (uvicorn, httptools, h11)",
    "httptools": "HTTP server (uvicorn, httptools, h11)",
    "gunicorn": "HTTP server (uvicorn, httptools, h11)",
    "starlette": "framework (starlette, fastapi)",
    "fastapi": "framework (starlette, fastapi)",
    "pydantic": "validation (pydantic)",
    "pydantic_core": "validation (pydantic)",
    "opentelemetry": "tracing (opentelemetry)",
    "prometheus_client": "metrics (prometheus_client)",
    "logging": "logging",
    "redis": "Redis client (redis-py)",
    "limits": "rate limit parsing (limits)",
    "anthropic": UPSTREAM_LAYER,
    "httpx2": UPSTREAM_LAYER,
    "httpcore2": UPSTREAM_LAYER,
    "httpx": UPSTREAM_LAYER,
    "httpcore": UPSTREAM_LAYER,
    "h11": UPSTREAM_LAYER,
    "aiohttp": UPSTREAM_LAYER,
    "multidict": UPSTREAM_LAYER,
    "yarl": UPSTREAM_LAYER,
    "propcache": UPSTREAM_LAYER,
    "json": "JSON (json, orjson)",
    "orjson": "JSON (json, orjson)",
    "claude_gateway": "gateway code (claude_gateway)",
    "reference_app": "reference app code",
}
# uvloop's own work (epoll, socket reads and writes it does in C) shows as the Python frame that runs the loop.
OTHER_LAYER = "event loop (uvloop) and the rest"
APPLICATION_PACKAGES = frozenset({"claude_gateway", "reference_app"})
# Frames on (nearly) every stack: process start-up and the event loop's run.
_PLUMBING_FUNCTIONS = frozenset(
    {
        "<module>", "main", "_run_module_as_main", "_run_code", "run", "run_until_complete", "run_forever",
        "_run_once", "_run", "asyncio_run", "serve", "_serve", "Runner.run", "UvicornWorker.run",
        "UvicornWorker._serve", "GatewayWorker.run", "GatewayWorker._serve_draining", "Server.serve", "Server._serve", "Server.run", "BaseApplication.run",
        "Arbiter.run", "Arbiter.manage_workers", "Arbiter.spawn_workers", "Arbiter.spawn_worker",
        "Worker.init_process", "Multiprocess.run", "Multiprocess.startup", "Process.run", "Process._bootstrap",
        "BaseProcess._bootstrap", "BaseProcess.run", "subprocess_started", "spawn_main", "_main",
    }
)  # fmt: skip


def py_spy_binary() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def short_file(self) -> str:
        path = self.file
        if _SITE_PACKAGES in path:
            return path.rsplit(_SITE_PACKAGES, 1)[1]
        stdlib = _STDLIB.search(path)
        if stdlib is not None:
            return path[stdlib.end() :]
        for marker in _REPO_DIRS:
            if marker in path:
                return path.rsplit(marker, 1)[1]
        return path

    @property
    def package(self) -> str:
        if self.file.startswith("<frozen"):
            return "<frozen>"
        short = self.short_file
        head = short.split("/", 1)[0]
        return head.removesuffix(".py") or "?"

    def __str__(self) -> str:
        return f"{self.function} ({self.short_file})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "?")
    return Frame(match["function"], match["file"])


def read_collapsed(path: Path) -> list[tuple[list[Frame], int]]:
    """Stacks (outermost first) and their sample counts; py-spy's `process N:"cmd"` prefixes dropped."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        frames = [parse_frame(part) for part in stack_text.split(";") if not part.startswith("process ")]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def layer_of(frames: list[Frame]) -> str:
    for frame in reversed(frames):
        package = frame.package
        if package in GENERIC:
            continue
        return LAYERS.get(package, OTHER_LAYER)
    return OTHER_LAYER


def summarise(stacks: Iterable[tuple[list[Frame], int]], top: int = TOP_FUNCTIONS) -> dict[str, Any]:
    """Top functions by self and inclusive samples, and every layer (percent of all samples)."""
    self_counts: Counter[Frame] = Counter()
    inclusive: Counter[Frame] = Counter()
    application: Counter[Frame] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        self_counts[frames[-1]] += count
        layers[layer_of(frames)] += count
        for frame in set(frames):
            if frame.function not in _PLUMBING_FUNCTIONS:
                inclusive[frame] += count
                if frame.package in APPLICATION_PACKAGES:
                    application[frame] += count

    def share(count: int) -> float:
        return round(100.0 * count / total, 1) if total else 0.0

    return {
        "samples": total,
        "layers": [{"layer": name, "pct": share(count)} for name, count in layers.most_common()],
        "self": [{"function": str(frame), "pct": share(count)} for frame, count in self_counts.most_common(top)],
        "inclusive": [{"function": str(frame), "pct": share(count)} for frame, count in inclusive.most_common(top)],
        "inclusive_application": [
            {"function": str(frame), "pct": share(count)} for frame, count in application.most_common(top)
        ],
    }


async def record(pid: int, output: Path, duration_s: float) -> asyncio.subprocess.Process | None:
    """Start sampling `pid` and its children for `duration_s` (returns at once; await `.wait()` on the result)."""
    binary = py_spy_binary()
    if binary is None:
        return None
    return await asyncio.create_subprocess_exec(
        binary, "record",
        "--pid", str(pid), "--subprocesses", "--full-filenames",
        "--format", "raw", "--output", str(output),
        "--duration", str(max(1, round(duration_s))), "--rate", str(SAMPLES_PER_S),
        # Reads the workers' memory without stopping them: a little less exact, but the load is not disturbed.
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def print_summary(title: str, summary: dict[str, Any], lines: int = 12) -> None:
    print(f"\n  {title}: {summary['samples']} samples")
    print("    by layer:   " + ", ".join(f"{entry['layer']} {entry['pct']}%" for entry in summary["layers"]))
    print("    self (top of stack):")
    for entry in summary["self"][:lines]:
        print(f"      {entry['pct']:5.1f}%  {entry['function']}")
    print("    inclusive, the application's own functions:")
    for entry in summary["inclusive_application"][:lines]:
        print(f"      {entry['pct']:5.1f}%  {entry['function']}")
