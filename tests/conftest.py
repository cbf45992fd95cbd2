"""Fixtures shared by every test: the simulator, redis-server and gateway factories, all real and on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from claude_gateway.server.http_protocol import GatewayHttpProtocol
from claude_gateway.settings import Settings, load_settings
from claude_gateway.web.app import create_app
from tests.support.servers import Process, RedisServer, ThreadedServer, free_port, start_simulator

# Every test's captured logs, spans and /metrics are scanned for the keys and prompt markers below.
pytest_plugins = ["tests.hostile.secret_scan"]

CLIENT_KEY = "cgw-test-alpha-7f3a9c"
OTHER_KEY = "cgw-test-beta-51d2e8"
# Fast enough for tests, slow enough that a stream is still running when the first event arrives.
SIMULATOR_ARGS = ("--ttft-ms", "5", "--tokens-per-s", "2000")


@dataclass
class Gateway:
    url: str
    settings: Settings
    app: FastAPI
    server: ThreadedServer

    @property
    def metrics_url(self) -> str:
        """Where /metrics and the deep /health answer (METRICS_PORT)."""
        return self.server.metrics_url

    def headers(self, key: str = CLIENT_KEY, **extra: str) -> dict[str, str]:
        return {"X-API-Key": key, **extra}


@pytest.fixture(scope="session")
def simulator() -> Iterator[Process]:
    process = start_simulator(*SIMULATOR_ARGS)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.resume()
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


def gateway_settings(simulator_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_base_url": simulator_url,
        "anthropic_api_key": "sk-ant-test-upstream-0d9c4b",
        "valid_api_keys": f"{CLIENT_KEY},{OTHER_KEY}",
        "rate_limit": "100000/minute",
        "upstream_max_retries": 0,
        "expose_docs": True,
        "metrics_port": free_port(),
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def make_gateway(simulator: Process) -> Iterator[Callable[..., Gateway]]:
    """`make_gateway(**settings)`: a gateway app served over HTTP, stopped after the test (`http=` picks uvicorn's
    HTTP protocol, the gateway's own by default)."""
    servers: list[ThreadedServer] = []

    def make(**overrides: Any) -> Gateway:
        http = overrides.pop("http", GatewayHttpProtocol)
        settings = gateway_settings(overrides.pop("anthropic_base_url", simulator.url), **overrides)
        app = create_app(settings)
        server = ThreadedServer(app, http=http, metrics_port=settings.metrics_port)
        server.start()
        servers.append(server)
        return Gateway(url=server.url, settings=settings, app=app, server=server)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


def pytest_configure(config: pytest.Config) -> None:
    """One SDK tracer provider for the session (OpenTelemetry allows setting it once), before any app is made: an
    app instruments itself only when spans are recorded (`tracing.recording`), as a gateway with an endpoint does."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


@pytest.fixture(scope="session")
def _span_exporter() -> InMemorySpanExporter:
    """The session's tracer provider, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another kind of tracer provider is installed"
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The spans finished during this test."""
    _span_exporter.clear()
    return _span_exporter
