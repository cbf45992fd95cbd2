"""The servers a benchmark runs, as real processes on free ports: redis-server, the simulator, the gateway
(`claude-gateway serve`, production settings) and the seed's reference app under uvicorn or Gunicorn.

Starting and stopping reuse the test suite's helpers (`tests.support.servers`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import Process, RedisServer, free_port, start_command, start_simulator, wait_for_port

from bench.procfs import ServerTree

REPO = Path(__file__).resolve().parents[1]
CLIENT_KEY = "cgw-bench-client-5e1f0a"
UPSTREAM_KEY = "sk-ant-bench-upstream-3c7d21"
# Limits far above anything a run can spend: they are checked and charged in Redis on every request, never refuse.
UNREACHABLE_REQUEST_LIMIT = "1000000000/minute"
UNREACHABLE_TOKEN_LIMIT = "1000000000000/minute"
# Upstream calls in flight per worker: 2,000 streams may all land on one worker (the kernel does not balance
# accepted connections), so each worker must take them all rather than answer 503 (the default is 256).
BENCH_MAX_INFLIGHT_UPSTREAM = 4096
# Nothing is in flight when a benchmark stops its servers: no reason to wait the production ten minutes.
BENCH_GRACEFUL_TIMEOUT_S = 5
# Both reference installs get the gateway's listen backlog and keep-alive, so neither refuses what the other takes.
REFERENCE_BACKLOG = 4096
REFERENCE_KEEPALIVE_S = 75
STOP_TIMEOUT_S = 20.0


@dataclass
class Server:
    """A started server: its name, its address and its process tree."""

    name: str
    process: Process

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def tree(self) -> ServerTree:
        return ServerTree(self.process.popen.pid)

    def stop(self) -> None:
        self.process.stop(timeout_s=STOP_TIMEOUT_S)


def start_redis() -> RedisServer:
    if shutil.which("redis-server") is None:
        raise SystemExit("bench: redis-server not found (apt-get install -y redis-server)")
    redis = RedisServer()
    redis.start()
    return redis


def start_sim(ttft_ms: float, tokens_per_s: float) -> Server:
    return Server("simulator", start_simulator("--ttft-ms", str(ttft_ms), "--tokens-per-s", str(tokens_per_s)))


def gateway_env(simulator_port: int, redis_url: str, workers: int) -> dict[str, str]:
    """Production settings: auth, Redis-backed limits (requests and tokens), metrics, tracing, JSON access logs."""
    return {
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{simulator_port}",
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "VALID_API_KEYS": CLIENT_KEY,
        "REDIS_URL": redis_url,
        "RATE_LIMIT": UNREACHABLE_REQUEST_LIMIT,
        "TOKEN_RATE_LIMIT": UNREACHABLE_TOKEN_LIMIT,
        "METRICS_ENABLED": "true",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "MAX_INFLIGHT_UPSTREAM": str(BENCH_MAX_INFLIGHT_UPSTREAM),
        "GRACEFUL_TIMEOUT_S": str(BENCH_GRACEFUL_TIMEOUT_S),
        "WORKERS": str(workers),
        "OTEL_SERVICE_NAME": "claude-gateway-bench",
    }


def start_gateway(simulator_port: int, redis_url: str, workers: int, http_client: str | None = None) -> Server:
    """The gateway with its default upstream HTTP client (named `gateway`), or with `http_client` (named
    `gateway-<client>`, for the clients' comparison)."""
    port = free_port()
    env = gateway_env(simulator_port, redis_url, workers)
    # /metrics on a port of its own, as in production (and never the default 9464 another gateway may hold).
    env["METRICS_PORT"] = str(free_port())
    if http_client is not None:
        env["UPSTREAM_HTTP_CLIENT"] = http_client
    # A fresh multiprocess metrics directory, as the image's is: never another run's.
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cgw-bench-metrics-")
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        os.environ.pop(name, None)
    process = start_command(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], port=port, env=env
    )
    return Server("gateway" if http_client is None else f"gateway-{http_client}", process)


REFERENCE_INSTALLS = ("uvicorn", "gunicorn")


def reference_command(install: str, port: int, workers: int) -> list[str]:
    """The seed's own `uvicorn main:app --workers N` (uvloop, httptools), or Gunicorn managing uvicorn workers."""
    if install == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "bench.reference_app:app",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--http", "httptools",
            "--backlog", str(REFERENCE_BACKLOG), "--timeout-keep-alive", str(REFERENCE_KEEPALIVE_S),
        ]  # fmt: skip
    if install == "gunicorn":
        return [
            sys.executable, "-m", "gunicorn", "bench.reference_app:app",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--worker-class", "uvicorn.workers.UvicornWorker",
            "--backlog", str(REFERENCE_BACKLOG), "--keep-alive", str(REFERENCE_KEEPALIVE_S),
        ]  # fmt: skip
    raise ValueError(f"unknown reference install {install!r} (expected one of {REFERENCE_INSTALLS})")


def start_reference(install: str, simulator_port: int, workers: int) -> Server:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix=f"cgw-bench-reference-{install}-", suffix=".log")[1])
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{simulator_port}",
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "VALID_API_KEYS": CLIENT_KEY,
        "PYTHONPATH": str(REPO),
        # uvicorn.workers is deprecated in favour of the uvicorn-worker package; the warning is noise here.
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            reference_command(install, port, workers),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
    process = Process(popen, port, log_path)
    try:
        wait_for_port(port)
    except TimeoutError:
        process.stop()
        raise SystemExit(f"bench: the reference ({install}) did not start:\n{process.output()}") from None
    return Server(f"reference-{install}", process)
