"""The app factory: `create_app(settings)` builds a gateway; its lifespan owns every long-lived resource."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio.lowlevel
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from claude_gateway import __version__, pricing
from claude_gateway.admission.backpressure import UpstreamSlots
from claude_gateway.admission.keys import KeyStore
from claude_gateway.admission.ownership import LocalOwnership, RedisOwnership
from claude_gateway.admission.ratelimit import RateLimiter
from claude_gateway.jobs import arq_queue, create_job_queue
from claude_gateway.settings import Settings, load_settings
from claude_gateway.telemetry import metrics, tracing
from claude_gateway.telemetry.logs import configure_logging, get_logger
from claude_gateway.upstream.client import UpstreamClient
from claude_gateway.web import exception_handlers as handlers
from claude_gateway.web.deps import State
from claude_gateway.web.extensions import Uploads
from claude_gateway.web.fast_lane import FastLanes, fast_lanes
from claude_gateway.web.health_check import Drain, HealthCheck
from claude_gateway.web.middleware import GatewayMiddleware
from claude_gateway.web.ops_port import OpsPortOnly
from claude_gateway.web.routes import (
    analyze,
    batches,
    chat,
    count_tokens,
    files,
    health,
    messages,
    models,
    ops,
    root,
    usage,
)
from claude_gateway.web.routes.plain import documentation_routes

log = get_logger("claude_gateway.web.app")

CORS_ALLOWED_HEADERS = [
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "idempotency-key",
    "x-request-id",
]
CORS_EXPOSED_HEADERS = [
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-should-retry",
    "x-request-id",
    "request-id",
    "x-gateway-overhead-ms",
    "x-gateway-cost-usd",
]
# Spans for every ASGI send/receive would add one span per SSE chunk; the request span is the one that matters.
TRACING_EXCLUDED_SPANS = ["receive", "send"]
TRACING_EXCLUDED_URLS = "health,metrics"
# The requests whose routes stream their bodies on to Anthropic, bounding them themselves (`web.upload_body`).
STREAMED_BODIES = files.SELF_BOUNDED | batches.SELF_BOUNDED


class GatewayApp(FastAPI):
    """FastAPI, with the plain routes (`/v1/messages`, `/chat`, ...) served down fast lanes (`fast_lane`): the lanes
    are one more user middleware, outermost, while Starlette's public `build_middleware_stack` runs."""

    def build_middleware_stack(self) -> ASGIApp:
        middleware = self.user_middleware
        self.user_middleware = [Middleware(FastLanes, lanes=fast_lanes(self, middleware)), *middleware]
        try:
            return super().build_middleware_stack()
        finally:
            self.user_middleware = middleware


def _startup_notes(settings: Settings, keys: KeyStore) -> None:
    metrics.REDIS_CONFIGURED.set(0 if settings.redis_url is None else 1)
    if settings.redis_url is None:
        # Nothing to be down: the gauge would otherwise read 0 and show Redis as down on the dashboard.
        metrics.REDIS_UP.set(1)
        log.warning(
            "no REDIS_URL: rate limits, spend budgets and usage records are held in this process only "
            "(one worker, no restarts)"
        )
    if settings.anthropic_api_key is None:
        log.warning("no ANTHROPIC_API_KEY: upstream calls carry a placeholder key (fine for the simulator only)")
    if len(keys) == 0:
        log.warning("no client keys configured (VALID_API_KEYS, API_KEYS_FILE): every request will get 401/403")


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        # anyio loads its asyncio backend on first use: 13 modules, about 27 ms of imports on the event loop, which
        # would otherwise stall the first request of every new worker and everything it serves meanwhile.
        await anyio.lowlevel.checkpoint()
        keys = KeyStore(settings)
        keys.load_file_now()
        # The one client to Anthropic: the routes, in-process jobs and the deep health check all call through it.
        upstream = UpstreamClient(settings)
        # One Redis client and connection pool for the process: rate limits and jobs share it (see `connect`).
        redis = arq_queue.connect(settings, client_name=arq_queue.API_CLIENT_NAME) if settings.redis_url else None
        limiter = RateLimiter.from_settings(settings, redis=redis)
        jobs = create_job_queue(settings, upstream, redis=redis)
        health_check = HealthCheck(
            upstream,
            settings.health_model,
            drain=app.state.drain,
            # Jobs and limits share one Redis client (above): one PING speaks for both.
            redis_ping=limiter.ping if settings.redis_url is not None else None,
            redis_required=settings.rate_limit_fail_mode == "closed",
        )
        _startup_notes(settings, keys)
        keys.start_watching()
        try:
            yield State(
                settings=settings,
                upstream=upstream,
                keys=keys,
                limiter=limiter,
                jobs=jobs,
                slots=UpstreamSlots(settings.max_inflight_upstream, settings.backpressure_wait_s),
                health=health_check,
                ownership=RedisOwnership(redis) if redis is not None else LocalOwnership(),
                uploads=Uploads(
                    frozenset((method.encode(), path.encode()) for method, path in STREAMED_BODIES),
                    settings.files_max_bytes,
                    settings.files_upload_timeout_s,
                ),
            )
        finally:
            await keys.stop_watching()
            await jobs.aclose()
            await limiter.aclose()
            if redis is not None:
                await redis.aclose(close_connection_pool=True)
            await upstream.aclose()

    return lifespan


def _document_plain_routes(app: FastAPI, fragments: list[dict[str, Any]]) -> None:
    """Add the operations and schemas of the plain routes (which FastAPI does not document) to the OpenAPI document,
    each path where its route stands in the app's routes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            plain = {path: item for fragment in fragments for path, item in fragment["paths"].items()}
            generated = document["paths"]
            paths = {
                path: plain.get(path) or generated[path]
                for route in app.routes
                if (path := getattr(route, "path", None)) in plain or path in generated
            }
            paths.update((path, item) for path, item in generated.items() if path not in paths)
            document["paths"] = paths
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for fragment in fragments:
                schemas.update(fragment.get("components", {}).get("schemas", {}))
            document["components"]["schemas"] = dict(sorted(schemas.items()))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    tracing.set_content_capture(settings.otel_instrumentation_genai_capture_message_content)
    pricing.activate(settings.price_table)
    app = GatewayApp(
        title="claude-gateway",
        version=__version__,
        debug=False,
        lifespan=_lifespan(settings),
        docs_url="/docs" if settings.expose_docs else None,
        redoc_url="/redoc" if settings.expose_docs else None,
        openapi_url="/openapi.json" if settings.expose_docs else None,
    )
    # The server starts it on SIGTERM (`app.state.drain.start()`): readiness answers 503 from then on, and the server
    # waits for the requests it counts (`GatewayMiddleware`) before it shuts down.
    app.state.drain = Drain()
    handlers.install(app)
    app.router.routes.extend(chat.build_routes(settings))
    app.router.routes.extend(messages.routes)
    app.include_router(usage.router)
    app.include_router(batches.router)
    app.include_router(files.router)
    app.router.routes.extend(count_tokens.routes)
    app.include_router(models.router)
    app.include_router(root.router)
    app.include_router(analyze.router)
    app.include_router(health.router)
    if settings.metrics_enabled:
        app.include_router(ops.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=CORS_ALLOWED_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    # Without a recording tracer provider (no OTLP endpoint) the instrumentation's middleware only makes no-op spans,
    # at about 10% of a proxied request's CPU (0.28 of 2.18 ms, measured): left out then.
    instrumented = tracing.recording()
    if instrumented:
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls=TRACING_EXCLUDED_URLS,
            exclude_spans=TRACING_EXCLUDED_SPANS,  # type: ignore[arg-type]
        )
    plain_doc = get_openapi(title=app.title, version=app.version, routes=documentation_routes(app.router.routes))
    _document_plain_routes(app, [plain_doc, {"paths": messages.OPENAPI_PATHS}, {"paths": count_tokens.OPENAPI_PATHS}])
    app.add_middleware(OpsPortOnly, metrics_port=settings.metrics_port)
    # Outermost: it must see every request, including those CORS or the instrumentation answer themselves.
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        self_bounded=STREAMED_BODIES,
        takes_caller_trace=not instrumented,
        drain=app.state.drain,
    )
    return app


def app_from_env() -> FastAPI:
    """Gunicorn's entry point in every worker: settings, logging and tracing from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.setup_tracing()
    return create_app(settings)
