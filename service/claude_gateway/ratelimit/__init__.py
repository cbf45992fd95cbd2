"""Per-client rate limits, requests and tokens, shared by every worker and pod through Redis.

How routes use it::

    limiter = RateLimiter.from_settings(settings, redis=redis)  # lifespan; `await limiter.aclose()` at the end
    headers = await limiter.hit_requests(client.name, client.request_limits)  # raises LimitExceeded
    reservation = await limiter.reserve_tokens(client.name, client.token_limits, reserved_tokens)
    try:
        ...                                            # call Claude, stream the answer
    finally:
        await limiter.settle(reservation, usage, model=label, cost=usd)  # also when cut short; never raises
    ready = await limiter.ping()                       # /health/ready

`acquire(client, requests=..., tokens=..., cost=..., budget=..., spend=...)` does all in one atomic
round trip (a request refused for its tokens or its budget then does not count as a request). Every call on the request path answers
within REDIS_TIMEOUT_S or applies RATE_LIMIT_FAIL_MODE; none blocks the event loop (redis-py's
asyncio client; `limits` only parses RATE_LIMIT, and slowapi's synchronous Redis path is not used).

- Refusals raise `LimitExceeded`, an `errors.RateLimited` (429) whose `limit` is ``requests`` or
  ``tokens``, with `Retry-After` (whole seconds until the refusing window resets, when the request
  would pass), the X-RateLimit-* headers, and ``x-should-retry: false`` when an SDK's own retry is
  futile (a wait over 60 s, or a request whose possible cost exceeds the token limit itself).
  Each refusal counts in ``claude_gateway_rate_limited_total{client,limit}``.
- X-RateLimit-Reset is delta-seconds until the window resets (the IETF draft's meaning): see `quota`.
- Tokens: a request reserves its input estimate and min(max_tokens, TOKEN_RESERVE_OUTPUT) before it
  runs (`lease.Reservation`); `settle` refunds what it did not use into the window it was charged to
  (while that window lasts) or charges what it used beyond, past the limit if need be: the window is
  then in debt and refuses until it resets. Counted: input + cache reads + cache writes + output.
- Budgets (`spend`): USD per UTC calendar day and month, in micro-USD counters checked in the same
  script as the limits, reserved at the reservation's worst-case price and settled to the real cost
  (into debt likewise). A budget refusal is 429 with Retry-After to the window's end and
  ``x-should-retry: false``, counted with ``limit="budget"``; ``claude_gateway_budget_used_ratio``
  follows every admission and settlement.
- Usage: each settlement also adds the call's tokens, cost and count to the client's records by
  model for today and this month (`read_usage`, `GET /v1/gateway/usage`), in the same script call.
- Strategy: fixed windows, checked and charged by one Lua script (`windows`, which documents the keys);
  concurrent admissions and settlements go to Redis together, one pipeline per batch (`script_pipeline`).
- Redis: `from_settings(settings, redis=...)` takes the process's client, shared with the ARQ job queue
  (one connection pool per API process); without one the limiter makes its own.
- Redis down: RATE_LIMIT_FAIL_MODE=open (default) serves, the limits held per process in memory
  until Redis answers; ``closed`` answers 503 (`errors.Overloaded`) with Retry-After. Either way a
  failure counts in ``claude_gateway_redis_errors_total{operation="ratelimit"}``, sets
  ``claude_gateway_redis_up`` to 0 and logs one warning per outage (logger
  ``claude_gateway.ratelimit``, never the URL). Redis is then tried again once a second, by one
  request at a time; its first answer restores shared limits and ``redis_up`` 1. A call that timed
  out may still be applied when a hung Redis wakes up: that over-counts (never under-counts) until
  its window ends.
"""

from claude_gateway.ratelimit.limiter import (
    REDIS_RETRY_INTERVAL_S,
    Admission,
    LimitExceeded,
    RateLimiter,
    TokenReservation,
)
from claude_gateway.ratelimit.quota import SDK_MAX_RETRY_AFTER_S, LimitHeaders, Quota
from claude_gateway.ratelimit.windows import KEY_PREFIX, LimitKind, window_key

__all__ = [
    "KEY_PREFIX",
    "REDIS_RETRY_INTERVAL_S",
    "SDK_MAX_RETRY_AFTER_S",
    "Admission",
    "LimitExceeded",
    "LimitHeaders",
    "LimitKind",
    "Quota",
    "RateLimiter",
    "TokenReservation",
    "window_key",
]
