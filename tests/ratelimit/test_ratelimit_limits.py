"""What a client sees of its limits, on Redis and in memory alike (the `backend` fixture runs each twice)."""

from __future__ import annotations

import asyncio
import random

import pytest
from limits import RateLimitItem, parse_many
from redis.asyncio import Redis

from claude_gateway.admission.ratelimit import KEY_PREFIX, LimitExceeded, RateLimiter, window_key
from claude_gateway.admission.ratelimit.windows import LimitKind
from claude_gateway.errors import RateLimited
from claude_gateway.upstream.usage import Usage

from .conftest import MakeLimiter
from .support import sample

CLIENT = "billing-service"
OTHER = "search-service"
# A window long enough never to roll over during a test, short enough that Retry-After stays under 60 s.
MINUTE_TOKENS = parse_many("1000/minute")


async def counter(limiter: RateLimiter, kind: LimitKind, client: str, item: RateLimitItem) -> int:
    """The count of the client's window of `item` now."""
    return await limiter.windows.count(window_key(kind, client, item))


def refusals(client: str, kind: str) -> float:
    return sample("claude_gateway_rate_limited_total", {"client": client, "limit": kind})


class TestRequests:
    async def test_admits_the_limit_then_refuses(self, limiter: RateLimiter) -> None:
        limits = parse_many("5/minute")
        for _ in range(5):
            await limiter.hit_requests(CLIENT, limits)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.hit_requests(CLIENT, limits)
        assert refused.value.limit == "requests"
        assert isinstance(refused.value, RateLimited)
        assert refused.value.status_code == 429

    async def test_headers_count_down(self, limiter: RateLimiter) -> None:
        limits = parse_many("3/minute")
        seen = [(await limiter.hit_requests(CLIENT, limits)).as_headers() for _ in range(3)]
        assert [headers["X-RateLimit-Remaining"] for headers in seen] == ["2", "1", "0"]
        assert {headers["X-RateLimit-Limit"] for headers in seen} == {"3"}
        assert all(1 <= int(headers["X-RateLimit-Reset"]) <= 60 for headers in seen)

    async def test_refusal_says_when_to_retry(self, limiter: RateLimiter) -> None:
        limits = parse_many("2/minute")
        await limiter.hit_requests(CLIENT, limits)
        await limiter.hit_requests(CLIENT, limits)
        before = refusals(CLIENT, "requests")
        with pytest.raises(LimitExceeded) as refused:
            await limiter.hit_requests(CLIENT, limits)
        headers = refused.value.headers
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert headers["Retry-After"] == headers["X-RateLimit-Reset"]
        assert headers["X-RateLimit-Remaining"] == "0"
        assert "x-should-retry" not in headers  # the SDKs wait up to 60 s as told
        assert refusals(CLIENT, "requests") == before + 1

    async def test_a_wait_beyond_a_minute_tells_sdks_not_to_retry(self, limiter: RateLimiter) -> None:
        limits = parse_many("1/hour")
        await limiter.hit_requests(CLIENT, limits)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.hit_requests(CLIENT, limits)
        assert 3000 < int(refused.value.headers["Retry-After"]) <= 3600
        assert refused.value.headers["x-should-retry"] == "false"

    async def test_the_window_resets(self, limiter: RateLimiter) -> None:
        limits = parse_many("2/second")
        await limiter.hit_requests(CLIENT, limits)
        await limiter.hit_requests(CLIENT, limits)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.hit_requests(CLIENT, limits)
        await asyncio.sleep(float(refused.value.headers["Retry-After"]) + 0.1)
        headers = await limiter.hit_requests(CLIENT, limits)
        assert headers.as_headers()["X-RateLimit-Remaining"] == "1"

    async def test_several_limits_are_charged_all_or_nothing(self, limiter: RateLimiter) -> None:
        minute, hour = limits = parse_many("3/minute;10/hour")
        for _ in range(3):
            await limiter.hit_requests(CLIENT, limits)
        for _ in range(4):
            with pytest.raises(LimitExceeded):
                await limiter.hit_requests(CLIENT, limits)
        assert await counter(limiter, "requests", CLIENT, hour) == 3  # refusals spent nothing
        assert await counter(limiter, "requests", CLIENT, minute) == 3

    async def test_the_tightest_limit_is_reported(self, limiter: RateLimiter) -> None:
        headers = await limiter.hit_requests(CLIENT, parse_many("100/hour;3/minute"))
        assert headers.as_headers()["X-RateLimit-Limit"] == "3"
        assert headers.as_headers()["X-RateLimit-Remaining"] == "2"

    async def test_clients_are_isolated(self, limiter: RateLimiter) -> None:
        limits = parse_many("2/minute")
        await limiter.hit_requests(CLIENT, limits)
        await limiter.hit_requests(CLIENT, limits)
        with pytest.raises(LimitExceeded):
            await limiter.hit_requests(CLIENT, limits)
        headers = await limiter.hit_requests(OTHER, limits)
        assert headers.as_headers()["X-RateLimit-Remaining"] == "1"

    async def test_no_limits_no_headers(self, limiter: RateLimiter) -> None:
        assert (await limiter.hit_requests(CLIENT, [])).as_headers() == {}


class TestTokens:
    async def test_a_reservation_holds_its_cost(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 600)
        assert reservation.cost == 600
        headers = reservation.headers.as_headers()
        assert headers["X-RateLimit-Remaining-Tokens"] == "400"
        assert headers["X-RateLimit-Limit-Tokens"] == "1000"
        with pytest.raises(LimitExceeded) as refused:
            await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 401)
        assert refused.value.limit == "tokens"
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 600  # the refusal spent nothing
        await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 400)  # what was left still fits exactly

    async def test_parallel_reservations_never_exceed_the_budget(self, limiter: RateLimiter) -> None:
        costs = [random.Random(seed).randint(1, 200) for seed in range(80)]  # about 8 000 asked of 1 000

        async def reserve(cost: int) -> int:
            try:
                await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, cost)
            except LimitExceeded:
                return 0
            return cost

        admitted = await asyncio.gather(*(reserve(cost) for cost in costs))
        used = await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0])
        assert sum(admitted) == used <= 1000
        # Nothing was refused that would have fitted: counts only grow, so a refused cost exceeds what is left.
        assert all(used + cost > 1000 for cost, got in zip(costs, admitted, strict=True) if not got)

    async def test_settle_refunds_what_was_not_used(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 500)
        await limiter.settle(reservation, 120)
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 120
        await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 880)  # the refund is budget again

    async def test_settle_charges_what_was_used_beyond(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 100)
        await limiter.settle(reservation, 300)
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 300
        with pytest.raises(LimitExceeded):
            await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 701)

    async def test_settle_counts_every_direction_of_usage(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 900)
        await limiter.settle(reservation, Usage(input=10, output=20, cache_read=300, cache_write=40))
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 370

    async def test_settle_twice_changes_nothing(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 500)
        await limiter.settle(reservation, 100)
        await limiter.settle(reservation, 0)
        assert reservation.settled
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 100

    async def test_a_stream_cut_short_settles_what_it_used(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 800)
        await limiter.settle(reservation, 0)  # the upstream never answered
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 0
        await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 1000)

    async def test_a_cancelled_settlement_still_refunds(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 800)
        task = asyncio.create_task(limiter.settle(reservation, 50))
        await asyncio.sleep(0)  # the settlement has started (in memory it is already done: nothing to wait for)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() == (limiter.backend == "redis")
        await limiter.aclose()  # waits for shielded settlements
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 50

    async def test_settlements_due_together_go_together(self, limiter: RateLimiter) -> None:
        """Refunds and an over-charge of two clients, due at the same moment: sent as one batch, each to its own
        windows, and each caller returns once its own is applied."""
        first = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 400)
        second = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 400)
        other = await limiter.reserve_tokens(OTHER, MINUTE_TOKENS, 100)
        more = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 100)
        await asyncio.gather(
            limiter.settle(first, 50),
            limiter.settle(second, 0),
            limiter.settle(other, 250),
            limiter.settle(more, 100),  # nothing to settle: used what it reserved
        )
        assert all(reservation.settled for reservation in (first, second, other, more))
        assert await counter(limiter, "tokens", CLIENT, MINUTE_TOKENS[0]) == 150
        assert await counter(limiter, "tokens", OTHER, MINUTE_TOKENS[0]) == 250

    async def test_many_settlements_find_their_window(self, limiter: RateLimiter) -> None:
        limits = parse_many("1000000/minute")
        for _ in range(100):
            reservation = await limiter.reserve_tokens(CLIENT, limits, 900)
            await limiter.settle(reservation, 7)
        assert await counter(limiter, "tokens", CLIENT, limits[0]) == 700

    async def test_a_refund_after_the_window_reset_is_dropped(self, limiter: RateLimiter) -> None:
        limits = parse_many("1000/second")
        old = await limiter.reserve_tokens(CLIENT, limits, 600)
        await asyncio.sleep(1.2)
        await limiter.reserve_tokens(CLIENT, limits, 300)  # a new window
        await limiter.settle(old, 0)
        assert await counter(limiter, "tokens", CLIENT, limits[0]) == 300

    async def test_an_over_charge_after_the_window_reset_lands_in_the_current_one(self, limiter: RateLimiter) -> None:
        limits = parse_many("1000/second")
        reservation = await limiter.reserve_tokens(CLIENT, limits, 100)
        await asyncio.sleep(1.2)
        await limiter.settle(reservation, 400)
        assert await counter(limiter, "tokens", CLIENT, limits[0]) == 300

    async def test_a_cost_above_the_whole_limit_is_never_retried(self, limiter: RateLimiter) -> None:
        before = refusals(CLIENT, "tokens")
        with pytest.raises(LimitExceeded) as refused:
            await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 1001)
        assert refused.value.limit == "tokens"
        assert refused.value.headers["x-should-retry"] == "false"
        assert "max_tokens" in refused.value.message
        assert int(refused.value.headers["Retry-After"]) >= 1
        assert refusals(CLIENT, "tokens") == before + 1

    async def test_without_token_limits_a_reservation_is_empty(self, limiter: RateLimiter) -> None:
        reservation = await limiter.reserve_tokens(CLIENT, [], 500)
        assert reservation.cost == 0
        await limiter.settle(reservation, 10_000)
        assert reservation.headers.as_headers() == {}


class TestBoth:
    async def test_a_request_refused_for_tokens_is_not_counted(self, limiter: RateLimiter) -> None:
        requests = parse_many("10/minute")
        admission = await limiter.acquire(CLIENT, requests=requests, tokens=MINUTE_TOKENS, cost=600)
        assert admission.headers.as_headers()["X-RateLimit-Remaining"] == "9"
        assert admission.headers.as_headers()["X-RateLimit-Remaining-Tokens"] == "400"
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, requests=requests, tokens=MINUTE_TOKENS, cost=600)
        assert refused.value.limit == "tokens"
        assert refused.value.headers["X-RateLimit-Remaining"] == "9"
        assert await counter(limiter, "requests", CLIENT, requests[0]) == 1
        await limiter.settle(admission.reservation, 100)
        await limiter.acquire(CLIENT, requests=requests, tokens=MINUTE_TOKENS, cost=600)

    async def test_requests_refusal_wins_the_label(self, limiter: RateLimiter) -> None:
        requests = parse_many("1/minute")
        await limiter.acquire(CLIENT, requests=requests, tokens=MINUTE_TOKENS, cost=900)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, requests=requests, tokens=MINUTE_TOKENS, cost=900)
        assert refused.value.limit == "requests"


async def test_keys_are_namespaced_and_name_the_client_only(make_limiter: MakeLimiter, redis_url: str) -> None:
    limiter = await make_limiter(redis_url)
    await limiter.acquire(CLIENT, requests=parse_many("5/minute"), tokens=MINUTE_TOKENS, cost=10)
    keys = sorted([key.decode() async for key in limiter.windows.redis.scan_iter()])  # type: ignore[attr-defined]
    assert keys == [
        f"{KEY_PREFIX}:LIMITER/requests/{CLIENT}/5/1/minute",
        f"{KEY_PREFIX}:LIMITER/tokens/{CLIENT}/1000/1/minute",
    ]


async def test_a_refund_does_not_reach_a_window_opened_since(make_limiter: MakeLimiter, redis_url: str) -> None:
    """An operator deleted a client's window; the refund of a reservation made before belongs to the old one."""
    limiter = await make_limiter(redis_url)
    item = MINUTE_TOKENS[0]
    old = await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 500)
    async with Redis.from_url(redis_url) as operator:
        await operator.delete(window_key("tokens", CLIENT, item))
    await asyncio.sleep(0.3)  # the new window must end later than the old one did, by more than the tolerance
    await limiter.reserve_tokens(CLIENT, MINUTE_TOKENS, 100)
    await limiter.settle(old, 0)
    assert await counter(limiter, "tokens", CLIENT, item) == 100


@pytest.mark.parametrize(
    ("limit", "kind", "key"),
    [
        ("10/minute", "requests", "claude-gateway:rl:LIMITER/requests/billing-service/10/1/minute"),
        ("200000 per 5 hours", "tokens", "claude-gateway:rl:LIMITER/tokens/billing-service/200000/5/hour"),
        ("1/second", "requests", "claude-gateway:rl:LIMITER/requests/billing-service/1/1/second"),
        ("500/day", "tokens", "claude-gateway:rl:LIMITER/tokens/billing-service/500/1/day"),
    ],
)
def test_window_keys_keep_the_layout_earlier_releases_wrote(limit: str, kind: LimitKind, key: str) -> None:
    """Old and new pods count into the same windows during a rolling upgrade (and a `limits` upgrade moves no key)."""
    assert window_key(kind, CLIENT, parse_many(limit)[0]) == key
