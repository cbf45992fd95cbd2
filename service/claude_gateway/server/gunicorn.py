"""`claude-gateway serve`: Gunicorn managing uvicorn workers, configured for streaming.

- Graceful shutdown waits `GRACEFUL_TIMEOUT_S` (default ten minutes) for in-flight streams: Gunicorn's own default
  of 30 s would cut every long generation on every deploy.
- The drain (`DrainingServer`): on SIGTERM a worker keeps its listeners open and serves every request that still
  arrives (the endpoints' removal takes seconds to reach every proxy), while `/health/ready` answers 503 and every
  answer says `Connection: close`; once nothing is in flight (or the grace period is nearly over) uvicorn shuts down
  as it always did.
- No worker recycling (`max_requests = 0`): recycling drops streams and leaves dead workers' metric files behind.
- The garbage collector: the objects loaded at start-up frozen out of full collections, young ones collected less
  often (`tune_garbage_collection`).
- Prometheus multiprocess mode: the metrics directory is set before any worker starts and wiped at every start;
  `child_exit` marks dead workers so their live gauges vanish.

Nothing in this module may import prometheus_client (directly or through `claude_gateway.telemetry.metrics`) at import time:
the master process must set `PROMETHEUS_MULTIPROC_DIR` before the workers, which it forks, first import it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn import Config, Server
from uvicorn_worker import UvicornWorker

from claude_gateway.server.gc_tuning import tune_garbage_collection
from claude_gateway.server.http_protocol import GatewayHttpProtocol
from claude_gateway.settings import Settings
from claude_gateway.web.drain import Drain

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Gunicorn kills a worker whose event loop has not checked in for this long: a blocked loop is a bug to surface.
WORKER_HEARTBEAT_TIMEOUT_S = 30
# Idle keep-alive connections from the ingress are reused for this long; longer than nginx's upstream keepalive.
KEEPALIVE_S = 75
# Pending connections the kernel queues per listener: bursts of thousands of streams must not be refused.
BACKLOG = 4096
# The drain ends this long before Gunicorn's graceful timeout, whatever is still in flight, so that uvicorn's own
# shutdown (CLOSE_WAIT_S, then the lifespan's: Redis and upstream pools closed) is over before the master's SIGKILL.
# Half the grace period at most, for short ones.
CLOSE_BUDGET_S = 5.0
# After the drain, uvicorn waits this long for the connections still busy (a request that came in as the drain ended;
# streams still running at its deadline), then cancels them. Whole seconds: uvicorn's setting is an int.
CLOSE_WAIT_S = 2

log = logging.getLogger("claude_gateway.server.gunicorn")


class DrainingServer(Server):
    """uvicorn's Server, whose first SIGTERM starts a drain rather than the shutdown.

    Public hooks only: `handle_exit` (uvicorn's signal handler), `should_exit` (what its main loop watches) and
    `startup`. The drain: `drain.start()` (readiness answers 503), every request still served, then, once
    `drain.in_flight` is 0 or `drain_s` after the signal, `handle_exit` as uvicorn would have run it at once.
    Any other signal, a second SIGTERM, or a SIGTERM before start-up is over, stops the server at once as before.
    """

    def __init__(self, config: Config, *, drain: Drain, drain_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_s = drain_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._loop is None or self.drain.active or self.should_exit:
            super().handle_exit(sig, frame)
            return
        # A signal handler runs between two bytecodes of whatever the loop was doing: only flag, and hand the rest
        # to the loop.
        self.drain.start()
        self._loop.call_soon_threadsafe(self._start_draining, sig)

    def _start_draining(self, sig: int) -> None:
        self._draining = asyncio.create_task(self._drain_then_exit(sig), name="claude-gateway drain")

    async def _drain_then_exit(self, sig: int) -> None:
        log.info(
            "draining: readiness answers 503; waiting for %d request(s) in flight (at most %.0f s)",
            self.drain.in_flight,
            self.drain_s,
        )
        if await self.drain.wait_idle(self.drain_s):
            log.info("drained: nothing in flight, shutting down")
        else:
            log.warning("drain deadline reached with %d request(s) still in flight", self.drain.in_flight)
        if not self.should_exit:  # a second signal may have stopped the server meanwhile
            super().handle_exit(sig, None)


class GatewayWorker(UvicornWorker):  # type: ignore[misc]
    """uvloop and httptools (with bounds on request heads: `http_protocol`); no `server` header naming the software;
    a drain on SIGTERM (`DrainingServer`)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "uvloop", "http": GatewayHttpProtocol, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grace_s = float(self.cfg.graceful_timeout)
        close_budget_s = min(CLOSE_BUDGET_S, grace_s / 2)
        # The drain takes the grace period but for the close budget; uvicorn's wait comes out of that budget.
        self.drain_s = grace_s - close_budget_s
        self.config.timeout_graceful_shutdown = int(min(CLOSE_WAIT_S, close_budget_s / 2))

    def run(self) -> None:
        """Gunicorn's entry point in the worker: uvicorn_worker's own, with a `DrainingServer`."""
        with asyncio.Runner(loop_factory=self.config.get_loop_factory()) as runner:
            runner.run(self._serve_draining())

    async def _serve_draining(self) -> None:
        self.config.app = self.wsgi
        state = getattr(self.wsgi, "state", None)
        drain = getattr(state, "drain", None)
        server = DrainingServer(self.config, drain=drain if isinstance(drain, Drain) else Drain(), drain_s=self.drain_s)
        # As uvicorn_worker does: SIGQUIT (Gunicorn's quick shutdown) through Gunicorn's handler.
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, self.handle_exit, signal.SIGQUIT, None)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def prepare_metrics_dir() -> Path:
    """The multiprocess directory, emptied: from `PROMETHEUS_MULTIPROC_DIR`, else a fresh temporary one."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for entry in path.iterdir():
            if entry.is_file() and entry.suffix == ".db":
                entry.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="claude-gateway-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
    return path


def _post_worker_init(worker: Any) -> None:
    tune_garbage_collection()


def _child_exit(server: Any, worker: Any) -> None:
    from claude_gateway.telemetry import metrics

    metrics.mark_process_dead(worker.pid)


class GatewayServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from claude_gateway.web.app import app_from_env

        return app_from_env()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_options(settings: Settings, host: str, port: int, workers: int) -> dict[str, Any]:
    return {
        # The app's port, and METRICS_PORT for /metrics and the deep /health (`ops_port`): every worker serves both.
        "bind": [_address(host, port), _address(host, settings.metrics_port)],
        "workers": workers,
        "worker_class": f"{GatewayWorker.__module__}.{GatewayWorker.__qualname__}",
        "graceful_timeout": math.ceil(settings.graceful_timeout_s),
        "timeout": WORKER_HEARTBEAT_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "backlog": BACKLOG,
        "max_requests": 0,
        "preload_app": False,
        "child_exit": _child_exit,
        # After the app is loaded in the worker, before it serves.
        "post_worker_init": _post_worker_init,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "claude-gateway",
        "worker_tmp_dir": tempfile.gettempdir(),
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
        # Gunicorn 27's control socket lives in $HOME, which a read-only root filesystem does not have; unused here.
        "control_socket_disable": True,
        "logconfig_dict": logging_config(settings),
    }


def logging_config(settings: Settings) -> dict[str, Any]:
    """The master's own lines (boot, worker deaths) in the same format as the workers'."""
    formatter = (
        "claude_gateway.telemetry.logs.JsonFormatter"
        if settings.log_format == "json"
        else "claude_gateway.telemetry.logs.TextFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": formatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "gateway", "stream": "ext://sys.stderr"}
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": settings.log_level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    prepare_metrics_dir()
    GatewayServer(gunicorn_options(settings, host, port, workers)).run()
