"""Test support for the rate limiter: throwaway redis-servers, metric samples, captured logs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

REDIS_SERVER_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")
# A fresh redis-server answers within milliseconds; a loaded CI machine may take a second or two.
REDIS_START_TIMEOUT_S = 15.0
REDIS_POLL_INTERVAL_S = 0.02
OUTAGE_PASSWORD = "s3cret-redis-password"


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return next((path for path in REDIS_SERVER_PATHS if os.access(path, os.X_OK)), None)


def require_redis_server() -> str:
    """The redis-server binary; without one, skip (or fail when CI=true: CI must have it)."""
    path = find_redis_server()
    if path is None:
        reason = "redis-server not found: apt-get install redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A throwaway redis-server that keeps nothing on disk and can be killed, paused and restarted."""

    def __init__(self, binary: str, *, password: str | None = None) -> None:
        self.binary = binary
        self.password = password
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="cgw-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=1.0)

    def start(self) -> None:
        assert self.port != 6379
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(REDIS_POLL_INTERVAL_S)

    def kill(self) -> None:
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing is ever answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A metric's current value in this process (0 when never set)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{record.levelname} {record.getMessage()}" for record in self.records)


async def in_thread(function: Callable[[], Any]) -> Any:
    """Run a blocking fixture helper (starting a redis-server) without stalling the test's event loop."""
    return await asyncio.to_thread(function)


TESTS_DIR = Path(__file__).parent
