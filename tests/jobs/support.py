"""Helpers of the jobs tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from arq.worker import Worker
from prometheus_client import REGISTRY

from claude_gateway.jobs import ArqJobQueue, InProcessJobQueue, JobView
from claude_gateway.jobs.constants import CHUNK_CHARS
from claude_gateway.jobs.worker import worker_settings
from claude_gateway.settings import Settings
from claude_gateway.upstream.client import RetryPolicy, UpstreamClient

# Retries in tests wait tens of milliseconds, not seconds (an upstream `retry-after` is still obeyed as sent).
FAST_RETRIES = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2)
# Workers in tests look at the queue this often (ARQ's default is 0.5 s).
POLL_DELAY_S = 0.05
# Upper bound for waiting on anything in a test; a healthy run takes a fraction of it.
WAIT_S = 30.0

MakeSettings = Callable[..., Settings]
MakeQueue = Callable[..., ArqJobQueue]
MakeInProcessQueue = Callable[..., InProcessJobQueue]
MakeUpstream = Callable[..., UpstreamClient]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def jobs_total(status: str) -> float:
    return REGISTRY.get_sample_value("claude_gateway_jobs_total", {"status": status}) or 0.0


def long_document(chunks: int) -> str:
    """A document just over `chunks - 1` chunks long, of 1,000-character paragraphs (every cut falls between two)."""
    paragraph = ("All work and no play makes Jack a dull boy. " * 23)[:998] + "\n\n"
    per_chunk = CHUNK_CHARS // len(paragraph)
    return paragraph * (per_chunk * (chunks - 1) + per_chunk // 2)


class Sim:
    """A simulator's counters over HTTP (`/_sim/stats`, `/_sim/reset`)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            response = await http.get("/_sim/stats")
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
            return stats

    async def requests(self) -> int:
        return int((await self.stats())["requests"])

    async def reset(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            (await http.post("/_sim/reset")).raise_for_status()

    async def wait_for_requests(self, count: int, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while await self.requests() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the simulator did not see {count} request(s) in {timeout_s} s")
            await asyncio.sleep(0.02)


async def wait_for_outcome(read: Callable[[], Awaitable[JobView | None]], timeout_s: float = WAIT_S) -> JobView:
    """Poll a task until it is no longer processing."""
    deadline = time.monotonic() + timeout_s
    while True:
        view = await read()
        assert view is not None, "the task disappeared"
        if view.status != "processing":
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"the task was still processing after {timeout_s} s")
        await asyncio.sleep(0.02)


class RunningWorker:
    """An ARQ worker of this process, running in the background until `stop()` (or the end of the test)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] = asyncio.create_task(worker.async_run())

    async def stop(self) -> None:
        await stop_worker(self.worker, self.task)


async def stop_worker(worker: Worker, task: asyncio.Task[None] | None) -> None:
    """Stop a worker run by `async_run` and close what it opened (its Redis pool, the Anthropic client)."""
    if task is not None and not task.done():
        if worker.main_task is not None:
            worker.main_task.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    running = [job for job in worker.tasks.values() if not job.done()]
    for job in running:
        job.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    if worker.on_shutdown is not None and "upstream" in worker.ctx:
        await worker.on_shutdown(worker.ctx)
    # Not worker.close(): it calls redis' deprecated close(), a warning (and so an error) under pytest here.
    if worker._pool is not None:
        await worker._pool.aclose(close_connection_pool=True)
        worker._pool = None


class Workers:
    """ARQ workers of this process: `run_burst(settings)` runs one until the queue is empty, `start(settings)` one in
    the background. Everything started is stopped and closed at the end of the test."""

    def __init__(self) -> None:
        self._started: list[tuple[Worker, asyncio.Task[None] | None]] = []

    @staticmethod
    def build(settings: Settings, *, burst: bool, job_timeout_s: float | None = None, **overrides: Any) -> Worker:
        config = worker_settings(settings, retry_policy=FAST_RETRIES, job_timeout_s=job_timeout_s)
        config.update(burst=burst, handle_signals=False, poll_delay=POLL_DELAY_S)
        config.update(overrides)
        return Worker(**config)

    async def run_burst(self, settings: Settings, **overrides: Any) -> Worker:
        worker = self.build(settings, burst=True, **overrides)
        self._started.append((worker, None))
        await asyncio.wait_for(worker.async_run(), WAIT_S)
        return worker

    def start(self, settings: Settings, **overrides: Any) -> RunningWorker:
        running = RunningWorker(self.build(settings, burst=False, **overrides))
        self._started.append((running.worker, running.task))
        return running

    async def close(self) -> None:
        for worker, task in self._started:
            await stop_worker(worker, task)
