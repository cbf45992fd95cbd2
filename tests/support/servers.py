"""Start real servers on free ports and stop them: redis-server, the simulator, a gateway app, a CLI command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from claude_gateway.server.http_protocol import GatewayHttpProtocol
from tests.support.programs import require_program

START_TIMEOUT_S = 20.0


# Ports this process has handed out: a server's port and its METRICS_PORT, taken one after the other, must differ,
# and the kernel may offer the same free port twice in a row (it did, on a busy machine).
_GIVEN_PORTS: set[int] = set()
_GIVEN_PORTS_LOCK = threading.Lock()
_GIVEN_PORTS_MAX = 20_000


def free_port() -> int:
    """A port nothing listens on now, and never one this process was given before."""
    with _GIVEN_PORTS_LOCK:
        if len(_GIVEN_PORTS) > _GIVEN_PORTS_MAX:
            _GIVEN_PORTS.clear()
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _GIVEN_PORTS:
                _GIVEN_PORTS.add(port)
                return port


def wait_for_port(port: int, timeout_s: float = START_TIMEOUT_S, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")


class RedisServer:
    """A throwaway redis-server on a free port (never 6379), nothing persisted; can be stopped, paused, restarted."""

    def __init__(self) -> None:
        self.binary = require_program("redis-server", "tests start their own Redis")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cgw-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections hang instead of failing, as a wedged Redis does."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


@dataclass
class Process:
    """A command of ours run as a real process, with its output kept for assertions."""

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path
    # `serve`'s METRICS_PORT, where /metrics and the deep /health answer.
    metrics_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None, "started without a metrics port"
        return f"http://127.0.0.1:{self.metrics_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return int(self.popen.returncode)


def start_command(args: Sequence[str], *, port: int, env: dict[str, str] | None = None, wait: bool = True) -> Process:
    """`python -m claude_gateway <args>` as a subprocess, its stdout and stderr captured in a file."""
    log_path = Path(tempfile.mkstemp(prefix="cgw-proc-", suffix=".log")[1])
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "claude_gateway", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    process = Process(popen, port, log_path)
    if wait:
        try:
            wait_for_port(port)
        except TimeoutError:
            process.stop(signal.SIGKILL)
            raise TimeoutError(f"{' '.join(args)} did not start:\n{process.output()}") from None
    return process


def start_simulator(*extra: str) -> Process:
    port = free_port()
    return start_command(["simulate", "--host", "127.0.0.1", "--port", str(port), *extra], port=port)


class ThreadedServer:
    """An ASGI app served by uvicorn on a free port from a background thread of the test process, with the
    gateway's own HTTP protocol as its workers have it (`http="httptools"` for uvicorn's own); and on
    `metrics_port` too when given, as `serve` binds METRICS_PORT beside the app's port."""

    def __init__(
        self, app: Any, *, http: type[asyncio.Protocol] | str = GatewayHttpProtocol, metrics_port: int | None = None
    ) -> None:
        self.port = free_port()
        self.metrics_port = metrics_port
        self.sockets = [_listen(port) for port in (self.port, metrics_port) if port is not None]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            http=http,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": self.sockets}, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None, "started without a metrics port"
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start (see the log above)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()
