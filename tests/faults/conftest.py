"""Faults under load: traffic generators, process and metrics helpers, and a simulator of each test's own.

- `serve` (from tests/server): `claude-gateway serve` as a subprocess (Gunicorn, uvicorn workers).
- `own_simulator`: a simulator process for one test, which the test may kill and restart on the same port.
- `Traffic`: many clients at once, each request with a deadline; the outcome of every request is tallied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEY, SIMULATOR_ARGS
from tests.server.conftest import serve  # the production server factory, reused as is
from tests.support.servers import Process, free_port, start_command, wait_for_port

__all__ = ["serve"]

HEADERS = {"X-API-Key": CLIENT_KEY}
# No request of these tests may take longer than this, whatever fault it meets: "no hang", not a speed bound.
REQUEST_DEADLINE_S = 15.0
# How long a test waits for an event it causes (streams open, a worker replaced, Redis seen down): milliseconds on a
# quiet machine, seconds when every core is busy; only its never happening is a failure.
EVENT_DEADLINE_S = 30.0


@dataclass
class SimulatorHandle:
    """A simulator on a fixed port that a test may kill (SIGKILL: connections die mid-stream) and start again."""

    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_command(
            ["simulate", "--host", "127.0.0.1", "--port", str(self.port), *SIMULATOR_ARGS], port=self.port
        )

    def kill(self) -> None:
        if self.process is not None:
            self.process.stop(signal.SIGKILL)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            return (await http.get("/_sim/stats")).json()  # type: ignore[no-any-return]


@pytest.fixture
def own_simulator() -> Iterator[SimulatorHandle]:
    handle = SimulatorHandle()
    handle.start()
    wait_for_port(handle.port)
    yield handle
    handle.stop()


# -- traffic


@dataclass
class Tally:
    """Outcomes by kind: `200`, `503`, ... for answers; `stream:done`, `stream:error:<type>` for streams;
    `transport:<Exception>` when the connection failed; `hung` past the deadline."""

    outcomes: Counter[str] = field(default_factory=Counter)
    started: int = 0

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def only(self, *allowed: str) -> dict[str, int]:
        """The outcomes not among `allowed` (prefixes), for assertion messages."""
        return {k: v for k, v in self.outcomes.items() if not k.startswith(allowed)}

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


async def stream_outcome(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    """One `/chat/stream` (or streamed `/v1/messages`): `stream:done`, `stream:error:<type>`, or the HTTP status."""
    async with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return str(response.status_code)
        last: Any = None
        error: str | None = None
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                payload = line[6:]
                if payload == "[DONE]":
                    last = "[DONE]"
                    continue
                event = json.loads(payload)
                if isinstance(event, dict) and "error" in event:
                    error = event["error"]["type"] if isinstance(event["error"], dict) else str(event["error"])
                last = event
        if error is not None:
            return f"stream:error:{error}"
        if last == "[DONE]" or (isinstance(last, dict) and last.get("type") == "message_stop"):
            return "stream:done"
        return "stream:truncated"


async def one(tally: Tally, request: Callable[[], Awaitable[str]], deadline_s: float = REQUEST_DEADLINE_S) -> str:
    tally.started += 1
    try:
        outcome = await asyncio.wait_for(request(), deadline_s)
    except TimeoutError:
        outcome = "hung"
    except httpx.HTTPError as exc:
        outcome = f"transport:{type(exc).__name__}"
    tally.add(outcome)
    return outcome


def chat(http: httpx.AsyncClient, message: str) -> Callable[[], Awaitable[str]]:
    async def request() -> str:
        return str((await http.post("/chat", json={"message": message})).status_code)

    return request


def chat_stream(http: httpx.AsyncClient, message: str) -> Callable[[], Awaitable[str]]:
    return lambda: stream_outcome(http, "/chat/stream", {"message": message})


async def keep_sending(
    tally: Tally, make: Callable[[int], Callable[[], Awaitable[str]]], stop: asyncio.Event, workers: int
) -> None:
    """`workers` clients, each sending one request after another until `stop` is set."""

    async def client() -> None:
        index = 0
        while not stop.is_set():
            await one(tally, make(index))
            index += 1

    await asyncio.gather(*(client() for _ in range(workers)))


def client(url: str, *, keepalive: bool = True, **kwargs: Any) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50 if keepalive else 0)
    return httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=REQUEST_DEADLINE_S + 5, limits=limits, **kwargs)


# -- metrics and processes


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the series of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/metrics")).text


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            # The command name (in parentheses) may contain spaces: fields follow its closing parenthesis.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


async def async_wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return await predicate()
