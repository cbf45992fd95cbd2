"""`claude-gateway serve | worker | simulate | dev`.

Imports are deferred to each command: `serve` must set up the metrics directory before anything imports
prometheus_client (see `claude_gateway.server.gunicorn`).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from claude_gateway import __version__
from claude_gateway.settings import Settings, SettingsError, load_settings

DEV_SIMULATOR_PORT = 8001
# The client key `make run` accepts when none is configured; documented in the README, never valid elsewhere.
DEV_CLIENT_KEY = "dev-key"
SIMULATOR_START_TIMEOUT_S = 15.0


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"claude-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _ports_or_exit(settings: Settings, port: int) -> None:
    if port == settings.metrics_port:
        print(f"claude-gateway: METRICS_PORT: {port} is the app's port too (set another)", file=sys.stderr)
        raise SystemExit(2)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    port = args.port or settings.port
    _ports_or_exit(settings, port)
    from claude_gateway.server.gunicorn import serve

    serve(settings, host=args.host or settings.host, port=port, workers=args.workers or settings.workers)
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    from claude_gateway.telemetry.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if args.check:  # the liveness probe, run every few seconds: it imports what it reads (a local file) only
        from claude_gateway.jobs.heartbeat import check_worker

        return check_worker(settings)
    from claude_gateway.jobs.worker import WorkerNotConfigured, run_worker

    try:
        run_worker(settings)
    except WorkerNotConfigured as exc:
        print(f"claude-gateway worker: {exc}", file=sys.stderr)
        return 2
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from claude_gateway.simulator import SimulatorConfig, serve

    config = SimulatorConfig(
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        seed=args.seed,
        api_key=args.api_key,
        batch_delay_s=args.batch_delay_s,
    )
    serve(args.host, args.port, config)
    return 0


def _wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _dev(args: argparse.Namespace) -> int:
    """`make run`: the gateway with embedded defaults, and the simulator when there is no Anthropic key."""
    from claude_gateway.telemetry.logs import configure_logging, get_logger

    configure_logging(os.environ.get("LOG_LEVEL", "info"), os.environ.get("LOG_FORMAT", "text"))
    log = get_logger("claude_gateway.dev")
    os.environ.setdefault("LOG_FORMAT", "text")
    simulator: subprocess.Popen[bytes] | None = None
    if not os.environ.get("ANTHROPIC_API_KEY"):
        port = args.simulator_port
        simulator = subprocess.Popen(
            [sys.executable, "-m", "claude_gateway", "simulate", "--host", "127.0.0.1", "--port", str(port)]
        )
        if not _wait_for_port("127.0.0.1", port, SIMULATOR_START_TIMEOUT_S):
            simulator.terminate()
            log.error("the simulator did not start", extra={"port": port})
            return 1
        os.environ["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{port}"
        log.info(f"no ANTHROPIC_API_KEY: using the bundled simulator at http://127.0.0.1:{port}")
    else:
        log.info("ANTHROPIC_API_KEY set: calling the Anthropic API")
    if not os.environ.get("REDIS_URL"):
        log.info("no REDIS_URL: rate limits and jobs in-process")
    if not os.environ.get("VALID_API_KEYS") and not os.environ.get("API_KEYS_FILE"):
        os.environ["VALID_API_KEYS"] = DEV_CLIENT_KEY
        log.info("no VALID_API_KEYS or API_KEYS_FILE: accepting the development key from the README")
    try:
        settings = _settings_or_exit()
        _ports_or_exit(settings, args.port)
        from claude_gateway.server.gunicorn import serve

        log.info(f"serving on http://{args.host}:{args.port}; /metrics on http://{args.host}:{settings.metrics_port}")
        serve(settings, host=args.host, port=args.port, workers=1)
    finally:
        if simulator is not None:
            simulator.terminate()
            simulator.wait(timeout=10)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-gateway", description="A production gateway for Claude.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="the production server (Gunicorn with uvicorn workers)")
    serve.add_argument("--host", help="address to bind (default: HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS or the CPU count)")
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="the ARQ worker for background jobs")
    worker.add_argument("--check", action="store_true", help="exit 0 if a worker is healthy (liveness probe)")
    worker.set_defaults(handler=_worker)

    simulate = commands.add_parser("simulate", help="the Anthropic Messages API simulator")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=DEV_SIMULATOR_PORT)
    simulate.add_argument("--ttft-ms", type=float, default=50.0, help="time to first token (ms)")
    simulate.add_argument("--tokens-per-s", type=float, default=400.0, help="generation speed (tokens/s)")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the deterministic output")
    simulate.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    simulate.add_argument(
        "--batch-delay-s",
        type=float,
        default=float(os.environ.get("SIM_BATCH_DELAY_S", "1.0")),
        help="seconds a message batch stays in_progress before it ends (env SIM_BATCH_DELAY_S; default 1)",
    )
    simulate.set_defaults(handler=_simulate)

    dev = commands.add_parser("dev", help="what `make run` runs: embedded defaults, the simulator without a key")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--simulator-port", type=int, default=DEV_SIMULATOR_PORT)
    dev.set_defaults(handler=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
