"""Request limits of their own for the light `/v1/*` endpoints (count_tokens, models), apart from `RATE_LIMIT`.

Each endpoint counts in its own window per key, named `<key name>:<endpoint>` in the limiter (so that a `600/minute`
here never shares a window with a `RATE_LIMIT` of the same size): a client that counts tokens or lists models often
does not use up its message limit, and the reverse. A refusal is the limiter's usual 429 with `Retry-After` and the
`X-RateLimit-*` headers of that window; `claude_gateway_rate_limited_total` counts it under `client="<name>:<endpoint>"`.
"""

from __future__ import annotations

from collections.abc import Sequence

from limits import RateLimitItem

from claude_gateway.deps import RelayCall


async def hit_endpoint_limit(call: RelayCall, endpoint: str, limits: Sequence[RateLimitItem]) -> None:
    """Count one request of `endpoint` against `limits` (none: no limit); its X-RateLimit-* go on the answer."""
    if limits:
        headers = await call.limiter.hit_requests(f"{call.client.name}:{endpoint}", limits)
        call.context.extra_headers.update(headers.as_headers())
