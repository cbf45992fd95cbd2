"""`claude-gateway worker` as separate processes: killed mid-job, stopped with SIGTERM, serving its metrics.

(`--check`, the lease of a running job and Redis outages: test_worker_recovery.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job

from claude_gateway.jobs.codec import deserialize
from claude_gateway.jobs.constants import QUEUE_NAME
from claude_gateway.jobs.keys import job_id
from claude_gateway.jobs.worker import WorkerNotConfigured, run_worker
from claude_gateway.simulator import BackgroundSimulator, SimulatorConfig

from .support import WAIT_S, MakeQueue, MakeSettings, Sim, free_port, wait_for_outcome

RUN_WORKER = (
    "import logging; logging.basicConfig(level=logging.INFO); "
    "from claude_gateway.settings import load_settings; "
    "from claude_gateway.jobs.worker import run_worker; "
    "run_worker(load_settings())"
)
# Short job timeouts: one call at UPSTREAM_TIMEOUT_S (MAX_DOCUMENT_CHARS fits in one chunk, and a job's call is one
# try whatever UPSTREAM_MAX_RETRIES says).
WORKER_ENV = {
    "UPSTREAM_TIMEOUT_S": "3",
    "MAX_DOCUMENT_CHARS": "1000",
    "JOB_MAX_TRIES": "3",
    "METRICS_ENABLED": "false",
    "ANTHROPIC_API_KEY": "sk-ant-test",
}

SpawnWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn_worker(redis_server: str, tmp_path: Path) -> Iterator[SpawnWorker]:
    """Start `run_worker` in a new Python process against `base_url`; every process started is ended after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(base_url: str, **extra_env: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **WORKER_ENV,
            "REDIS_URL": redis_server,
            "ANTHROPIC_BASE_URL": base_url,
            "WORKER_HEARTBEAT_FILE": str(tmp_path / f"worker-{len(started)}.heartbeat"),
            **extra_env,
        }
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        process = subprocess.Popen([sys.executable, "-c", RUN_WORKER], env=env, stdout=log, stderr=log)
        log.close()
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def slow_simulator() -> Iterator[BackgroundSimulator]:
    """A simulator that takes a minute to answer: a job calling it is mid-flight for as long as the test needs."""
    with BackgroundSimulator(SimulatorConfig(ttft_ms=60_000)) as sim:
        yield sim


async def exited(process: subprocess.Popen[bytes], timeout_s: float = WAIT_S) -> int:
    return await asyncio.to_thread(process.wait, timeout_s)


@pytest.mark.slow
async def test_a_job_of_a_killed_worker_completes_on_another_worker(
    make_queue: MakeQueue,
    make_settings: MakeSettings,
    spawn_worker: SpawnWorker,
    slow_simulator: BackgroundSimulator,
    sim: Sim,
    redis: ArqRedis,
) -> None:
    queue = make_queue(make_settings(max_document_chars=1000))
    view = await queue.submit(client="billing", document="Survive a crash.", idempotency_key=None)
    first = spawn_worker(slow_simulator.base_url)
    slow = Sim(slow_simulator.base_url)
    await slow.reset()
    await slow.wait_for_requests(1)  # the job is running in the first worker

    first.send_signal(signal.SIGKILL)
    assert await exited(first) == -signal.SIGKILL
    assert (await queue.get(client="billing", task_id=view.task_id)) is not None

    spawn_worker(sim.base_url)
    done = await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))
    assert done.status == "complete"
    assert await sim.requests() == 1
    info = await Job(job_id("billing", view.task_id), redis, QUEUE_NAME, deserialize).result_info()
    assert info is not None
    assert info.job_try == 2  # the second worker's run was the job's second try


async def test_sigterm_lets_the_running_job_finish(
    make_queue: MakeQueue, make_settings: MakeSettings, spawn_worker: SpawnWorker, sim: Sim
) -> None:
    settings = make_settings(max_document_chars=1000)
    queue = make_queue(settings)
    view = await queue.submit(client="billing", document="[[sim:ttft_ms=1000]] Finish me.", idempotency_key=None)
    worker = spawn_worker(sim.base_url)
    await sim.wait_for_requests(1)

    worker.send_signal(signal.SIGTERM)
    assert await exited(worker) == 0
    done = await queue.get(client="billing", task_id=view.task_id)
    assert done is not None
    assert done.status == "complete"
    assert await sim.requests() == 1


async def test_the_worker_serves_its_metrics(
    make_queue: MakeQueue, make_settings: MakeSettings, spawn_worker: SpawnWorker, sim: Sim
) -> None:
    port = free_port()
    worker = spawn_worker(sim.base_url, METRICS_ENABLED="true", HOST="127.0.0.1", METRICS_PORT=str(port))
    queue = make_queue(make_settings(max_document_chars=1000))
    view = await queue.submit(client="billing", document="Count me.", idempotency_key=None)
    assert (await wait_for_outcome(lambda: queue.get(client="billing", task_id=view.task_id))).status == "complete"
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'claude_gateway_jobs_total{status="complete"} 1.0' in text
    assert "claude_gateway_job_duration_seconds_count 1.0" in text
    assert 'claude_gateway_upstream_requests_total{model="claude-sonnet-4-6",outcome="ok"} 1.0' in text
    worker.send_signal(signal.SIGTERM)
    assert await exited(worker) == 0


def test_run_worker_needs_redis(make_settings: MakeSettings) -> None:
    with pytest.raises(WorkerNotConfigured, match="REDIS_URL is not set"):
        run_worker(make_settings(redis_url=None))
