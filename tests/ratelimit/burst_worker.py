"""One "gateway worker process" of the cross-process burst test.

Usage: python burst_worker.py REDIS_URL KIND LIMIT TASKS COST
Builds a RateLimiter from Settings, connects, prints "ready", waits for a line on stdin (so that every
process starts its burst together), fires TASKS concurrent hits (KIND "requests") or reservations of
COST tokens (KIND "tokens"), then prints {"admitted": N, "redis_up": bool} as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from limits import parse_many

from claude_gateway.admission.ratelimit import LimitExceeded, RateLimiter
from claude_gateway.settings import load_settings

CLIENT = "burst-client"
# The burst tests the atomicity of the counters, not the timeout: give a loaded 2-core machine room.
REDIS_TIMEOUT_S = 10.0


async def main(redis_url: str, kind: str, limit: str, tasks: int, cost: int) -> None:
    limiter = RateLimiter.from_settings(load_settings(redis_url=redis_url, redis_timeout_s=REDIS_TIMEOUT_S))
    items = parse_many(limit)
    if not await limiter.ping():
        raise SystemExit("redis did not answer")
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    async def one() -> bool:
        try:
            if kind == "requests":
                await limiter.hit_requests(CLIENT, items)
            else:
                await limiter.reserve_tokens(CLIENT, items, cost)
        except LimitExceeded:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(tasks)))
    redis_up = await limiter.ping()
    await limiter.aclose()
    print(json.dumps({"admitted": sum(results), "redis_up": redis_up}), flush=True)


if __name__ == "__main__":
    url, kind, limit, tasks, cost = sys.argv[1:6]
    asyncio.run(main(url, kind, limit, int(tasks), int(cost)))
