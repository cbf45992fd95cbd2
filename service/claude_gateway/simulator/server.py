"""Running the simulator: `serve()` for the CLI, `BackgroundSimulator` for tests and benchmarks in one process."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from claude_gateway.server.gc_tuning import tune_garbage_collection
from claude_gateway.simulator.app import SimulatorApp, create_app
from claude_gateway.simulator.config import SimulatorConfig

# Benchmarks open ~2,000 streams at once: a short accept queue would refuse connections before uvicorn sees them.
LISTEN_BACKLOG = 4096
# A simulator has nothing to save on the way out: open streams get this long, then are cut.
SHUTDOWN_GRACE_S = 2
STARTUP_TIMEOUT_S = 10.0
_STARTUP_POLL_S = 0.01


def _uvicorn_config(app: SimulatorApp, host: str, port: int, *, log_config: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        backlog=LISTEN_BACKLOG,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        log_config=LOGGING_CONFIG if log_config else None,
    )


def serve(host: str, port: int, config: SimulatorConfig) -> None:
    """Serve the simulator until interrupted (blocking). Its collector is tuned as the gateway's workers are: a
    full collection of what it loaded took 28 ms here, a pause every stream it served felt, in whichever
    benchmark phase it fell."""
    app = create_app(config)
    tune_garbage_collection()
    try:
        uvicorn.Server(_uvicorn_config(app, host, port, log_config=True)).run()
    finally:
        app.close()


class BackgroundSimulator:
    """The simulator on a free port in a thread of this process; a context manager.

    The listening socket is bound before the thread starts, so `base_url` is known and no port can be lost to a race.
    """

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1") -> None:
        self.config = config or SimulatorConfig()
        self.app = create_app(self.config)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((host, 0))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, host, self.port, log_config=False))
        self._thread = threading.Thread(target=self._run, name=f"simulator-{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self) -> BackgroundSimulator:
        self._socket.listen(LISTEN_BACKLOG)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator did not start on {self.base_url}")
            time.sleep(_STARTUP_POLL_S)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=SHUTDOWN_GRACE_S + STARTUP_TIMEOUT_S)
        self._socket.close()
        self.app.close()

    def __enter__(self) -> BackgroundSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
