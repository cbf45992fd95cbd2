"""The app's long-lived resources (built by the lifespan) and the dependencies routes declare to reach them."""

from __future__ import annotations

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from claude_gateway.auth import ClientKey, KeyStore, presented_key
from claude_gateway.backpressure import UpstreamSlots
from claude_gateway.context import RequestContext, request_context
from claude_gateway.health import HealthCheck
from claude_gateway.jobs import JobQueue
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.settings import Settings
from claude_gateway.transport import AnthropicTransport


class State(TypedDict):
    settings: Settings
    upstream: AnthropicTransport
    keys: KeyStore
    limiter: RateLimiter
    jobs: JobQueue
    slots: UpstreamSlots
    health: HealthCheck


async def get_settings(request: Request) -> Settings:
    return request.state.settings  # type: ignore[no-any-return]


async def get_upstream(request: Request) -> AnthropicTransport:
    return request.state.upstream  # type: ignore[no-any-return]


async def get_limiter(request: Request) -> RateLimiter:
    return request.state.limiter  # type: ignore[no-any-return]


async def get_jobs(request: Request) -> JobQueue:
    return request.state.jobs  # type: ignore[no-any-return]


async def get_slots(request: Request) -> UpstreamSlots:
    return request.state.slots  # type: ignore[no-any-return]


async def get_health(request: Request) -> HealthCheck:
    return request.state.health  # type: ignore[no-any-return]


async def authenticate(request: Request) -> ClientKey:
    """401 without a key, 403 with an unknown one; the context learns the client's name (never its key)."""
    keys: KeyStore = request.state.keys
    client = keys.authenticate(presented_key(request.headers))
    request_context(request).client = client.name
    return client


async def limited_client(request: Request, client: Annotated[ClientKey, Depends(authenticate)]) -> ClientKey:
    """An authenticated client within its request limit; the X-RateLimit-* headers go on whatever answer follows."""
    limiter: RateLimiter = request.state.limiter
    if client.request_limits:
        headers = await limiter.hit_requests(client.name, client.request_limits)
        request_context(request).extra_headers.update(headers.as_headers())
    return client


async def get_context(request: Request) -> RequestContext:
    return request_context(request)


# Every dependency is `async def`: FastAPI runs plain `def` dependencies in a thread pool, a thread hop per request.
Ctx = Annotated[RequestContext, Depends(get_context)]
Config = Annotated[Settings, Depends(get_settings)]
Upstream = Annotated[AnthropicTransport, Depends(get_upstream)]
Client = Annotated[ClientKey, Depends(authenticate)]
LimitedClient = Annotated[ClientKey, Depends(limited_client)]
Limiter = Annotated[RateLimiter, Depends(get_limiter)]
Jobs = Annotated[JobQueue, Depends(get_jobs)]
Slots = Annotated[UpstreamSlots, Depends(get_slots)]
Health = Annotated[HealthCheck, Depends(get_health)]
