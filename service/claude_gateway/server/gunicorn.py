"""`claude-gateway serve`: Gunicorn managing uvicorn workers, configured for streaming.

- Graceful shutdown waits `GRACEFUL_TIMEOUT_S` (default ten minutes) for in-flight streams: Gunicorn's own default
  of 30 s would cut every long generation on every deploy.
- No worker recycling (`max_requests = 0`): recycling drops streams and leaves dead workers' metric files behind.
- The garbage collector: the objects loaded at start-up frozen out of full collections, young ones collected less
  often (`tune_garbage_collection`).
- Prometheus multiprocess mode: the metrics directory is set before any worker starts and wiped at every start;
  `child_exit` marks dead workers so their live gauges vanish.

Nothing in this module may import prometheus_client (directly or through `claude_gateway.telemetry.metrics`) at import time:
the master process must set `PROMETHEUS_MULTIPROC_DIR` before the workers, which it forks, first import it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from claude_gateway.server.gc_tuning import tune_garbage_collection
from claude_gateway.server.http_protocol import GatewayHttpProtocol
from claude_gateway.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Gunicorn kills a worker whose event loop has not checked in for this long: a blocked loop is a bug to surface.
WORKER_HEARTBEAT_TIMEOUT_S = 30
# Idle keep-alive connections from the ingress are reused for this long; longer than nginx's upstream keepalive.
KEEPALIVE_S = 75
# Pending connections the kernel queues per listener: bursts of thousands of streams must not be refused.
BACKLOG = 4096


class GatewayWorker(UvicornWorker):  # type: ignore[misc]
    """uvloop and httptools (with bounds on request heads: `http_protocol`); no `server` header naming the software."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "uvloop", "http": GatewayHttpProtocol, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Uvicorn's own wait for open connections on shutdown matches Gunicorn's grace period.
        self.config.timeout_graceful_shutdown = int(self.cfg.graceful_timeout)


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


def gunicorn_options(settings: Settings, host: str, port: int, workers: int) -> dict[str, Any]:
    return {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
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
        "forwarded_allow_ips": "*",
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
