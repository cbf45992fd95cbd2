"""A real `claude-gateway serve` (Gunicorn, several uvicorn workers) against the simulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import CLIENT_KEY, OTHER_KEY
from tests.support.servers import Process, free_port, start_command

WORKERS_START_TIMEOUT_S = 30.0


def wait_for_workers(process: Process, workers: int) -> None:
    """Until every worker has finished its lifespan start-up (the port opens when the first one has)."""
    deadline = time.monotonic() + WORKERS_START_TIMEOUT_S
    while process.output().count("Application startup complete") < workers:
        if time.monotonic() > deadline or process.popen.poll() is not None:
            raise TimeoutError(f"workers did not start:\n{process.output()}")
        time.sleep(0.05)


ServeFactory = Callable[..., Process]


@pytest.fixture
def serve(simulator: Process) -> Iterator[ServeFactory]:
    """`serve(workers=2, **env)`: the production server as a subprocess; stopped (SIGTERM) afterwards."""
    started: list[Process] = []

    def start(workers: int = 2, **env: str) -> Process:
        port = free_port()
        metrics_port = free_port()
        environment = {
            "METRICS_PORT": str(metrics_port),
            "ANTHROPIC_BASE_URL": simulator.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-upstream-0d9c4b",
            "VALID_API_KEYS": f"{CLIENT_KEY},{OTHER_KEY}",
            "RATE_LIMIT": "100000/minute",
            "UPSTREAM_MAX_RETRIES": "0",
            "GRACEFUL_TIMEOUT_S": "30",
            **env,
        }
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        process = start_command(
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            port=port,
            env=environment,
        )
        process.metrics_port = int(environment["METRICS_PORT"])
        started.append(process)
        wait_for_workers(process, workers)
        return process

    yield start
    for process in started:
        process.stop()
