"""The app's long-lived resources (built by the lifespan) and the dependencies routes declare to reach them."""

from __future__ import annotations

from typing import Annotated, NamedTuple, TypedDict

from fastapi import Depends, Request

from claude_gateway.auth import ClientKey, KeyStore, presented_key
from claude_gateway.backpressure import UpstreamSlots
from claude_gateway.context import RequestContext, request_context
from claude_gateway.health import HealthCheck
from claude_gateway.http_protocol import Uploads
from claude_gateway.jobs import JobQueue
from claude_gateway.lease import Reservation, UpstreamLease
from claude_gateway.ownership import Ownership
from claude_gateway.ratelimit import RateLimiter
from claude_gateway.settings import Settings
from claude_gateway.upstream_client import UpstreamClient


class State(TypedDict):
    settings: Settings
    upstream: UpstreamClient
    keys: KeyStore
    limiter: RateLimiter
    jobs: JobQueue
    slots: UpstreamSlots
    health: HealthCheck
    # Who created which batch and file (Redis when REDIS_URL is set, else this process).
    ownership: Ownership
    # The upload routes' own body bounds, which the HTTP protocol reads from this state.
    uploads: Uploads


async def get_jobs(request: Request) -> JobQueue:
    return request.state.jobs  # type: ignore[no-any-return]


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


class RelayCall(NamedTuple):
    """Everything a route relaying to Anthropic needs (`relay_call`): those routes are plain routes, the busiest,
    and take it in one call rather than as FastAPI dependencies."""

    client: ClientKey
    context: RequestContext
    settings: Settings
    upstream: UpstreamClient
    limiter: RateLimiter
    slots: UpstreamSlots

    def lease(self, route: str, cost: Reservation) -> UpstreamLease:
        """The call's place in the client's limits and an upstream slot, not yet acquired."""
        return UpstreamLease(
            route=route, client=self.client, cost=cost, limiter=self.limiter, slots=self.slots, context=self.context
        )


async def relay_call(request: Request) -> RelayCall:
    """The caller authenticated (401 / 403 otherwise), with the app's resources for the call."""
    client = await authenticate(request)
    state = request.state
    return RelayCall(client, request_context(request), state.settings, state.upstream, state.limiter, state.slots)


# Every dependency is `async def`: FastAPI runs plain `def` dependencies in a thread pool, a thread hop per request.
Client = Annotated[ClientKey, Depends(authenticate)]
LimitedClient = Annotated[ClientKey, Depends(limited_client)]
Jobs = Annotated[JobQueue, Depends(get_jobs)]
Health = Annotated[HealthCheck, Depends(get_health)]
