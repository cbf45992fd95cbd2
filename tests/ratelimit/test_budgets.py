"""Spend budgets in the limiter, on Redis and in memory alike: checked with the limits in one call, settled to the real
cost (into debt when a call cost more than it reserved), usage recorded by model in the same settlement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from limits import parse_many
from redis.asyncio import Redis

from claude_gateway import errors
from claude_gateway.budgets import Budget
from claude_gateway.ratelimit import LimitExceeded, RateLimiter
from claude_gateway.ratelimit.limiter import _BudgetGauges
from claude_gateway.ratelimit.spend import (
    BUDGET_KEY_GRACE_S,
    USAGE_KEPT_PAST_WINDOW_S,
    budget_key,
    calendar_window,
    current_windows,
    format_usd,
    to_micro_usd,
    usage_clients_key,
    usage_key,
    usage_models_key,
)
from claude_gateway.ratelimit.windows import Charge
from claude_gateway.usage import Usage

from .conftest import MakeLimiter
from .support import RedisServer, sample

CLIENT = "budgeted"
OTHER = "unbudgeted"
DAY = Budget(day=Decimal("0.05"))
MONTH_ONLY = Budget(month=Decimal("1"))
# Five cents: 50 000 micro-USD.
BUDGET_MICRO = 50_000


def day_key(client: str = CLIENT) -> str:
    return budget_key(current_windows()[0], client)


@pytest.mark.parametrize(
    ("moment", "name", "period", "ends_at"),
    [
        (datetime(2026, 12, 6, 13, 5, tzinfo=UTC), "day", "2026-12-06", datetime(2026, 12, 7, tzinfo=UTC)),
        (datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC), "day", "2026-12-06", datetime(2026, 12, 7, tzinfo=UTC)),
        (datetime(2026, 12, 31, 12, tzinfo=UTC), "day", "2026-12-31", datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 12, 6, 13, 5, tzinfo=UTC), "month", "2026-12", datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 2, 28, 23, tzinfo=UTC), "month", "2026-02", datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2028, 2, 29, 1, tzinfo=UTC), "day", "2028-02-29", datetime(2028, 3, 1, tzinfo=UTC)),
    ],
)
def test_calendar_windows_end_at_utc_midnight_and_the_first_of_the_month(
    moment: datetime, name: str, period: str, ends_at: datetime
) -> None:
    window = calendar_window(name, moment)  # type: ignore[arg-type]
    assert (window.period, window.ends_at) == (period, ends_at)


def test_a_window_of_another_timezone_is_the_utc_one() -> None:
    from datetime import timedelta, timezone

    evening_in_new_york = datetime(2026, 12, 6, 20, 0, tzinfo=timezone(timedelta(hours=-5)))  # 01:00 UTC on the 7th
    assert calendar_window("day", evening_in_new_york).period == "2026-12-07"


@pytest.mark.parametrize(
    ("amount", "text"),
    [("20", "$20.00"), ("0.05", "$0.05"), ("400.5", "$400.50"), ("0.001", "$0.001"), ("0", "$0.00")],
)
def test_budget_amounts_read_as_money(amount: str, text: str) -> None:
    assert format_usd(Decimal(amount)) == text


@pytest.mark.parametrize(("usd", "micro"), [("0.05", 50_000), ("0.0000001", 1), ("1.2345678", 1_234_568)])
def test_micro_usd_round_up(usd: str, micro: int) -> None:
    assert to_micro_usd(Decimal(usd)) == micro


class TestBudgets:
    async def test_reservations_fill_the_budget_and_no_more(self, limiter: RateLimiter) -> None:
        admitted = BUDGET_MICRO // 4_500
        for _ in range(admitted):
            await limiter.acquire(CLIENT, budget=DAY, spend=4_500)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, budget=DAY, spend=4_500)
        assert refused.value.limit == "budget"
        assert await limiter.count(day_key()) == admitted * 4_500

    async def test_the_refusal_names_the_budget_and_its_reset_and_forbids_sdk_retries(
        self, limiter: RateLimiter
    ) -> None:
        await limiter.acquire(CLIENT, budget=DAY, spend=BUDGET_MICRO)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, budget=DAY, spend=1)
        day = current_windows()[0]
        assert refused.value.message == (
            f"Daily budget of $0.05 for this key is spent; it resets at {day.resets_at_text}"
        )
        headers = refused.value.headers
        assert headers["x-should-retry"] == "false"
        until_midnight = day.ends_at_s - datetime.now(UTC).timestamp()
        assert until_midnight - 5 <= int(headers["Retry-After"]) <= until_midnight + 1

    async def test_a_request_costlier_than_the_whole_budget_says_so(self, limiter: RateLimiter) -> None:
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, budget=DAY, spend=BUDGET_MICRO + 1)
        assert "more than this key's daily budget of $0.05" in refused.value.message
        assert refused.value.headers["x-should-retry"] == "false"
        assert await limiter.count(day_key()) == 0

    async def test_a_monthly_budget_names_the_month(self, limiter: RateLimiter) -> None:
        await limiter.acquire(CLIENT, budget=MONTH_ONLY, spend=1_000_000)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, budget=MONTH_ONLY, spend=1)
        month = current_windows()[1]
        assert refused.value.message.startswith("Monthly budget of $1.00 for this key is spent")
        assert month.resets_at_text in refused.value.message

    async def test_a_budget_refusal_charges_no_limit(self, limiter: RateLimiter) -> None:
        requests, tokens = parse_many("10/minute"), parse_many("1000/minute")
        await limiter.acquire(CLIENT, budget=DAY, spend=BUDGET_MICRO)
        with pytest.raises(LimitExceeded):
            await limiter.acquire(CLIENT, requests=requests, tokens=tokens, cost=100, budget=DAY, spend=1)
        admission = await limiter.acquire(CLIENT, requests=requests, tokens=tokens, cost=100)
        assert admission.headers.as_headers()["X-RateLimit-Remaining"] == "9"  # the refused one was not counted
        assert admission.headers.as_headers()["X-RateLimit-Remaining-Tokens"] == "900"

    async def test_another_key_is_not_refused(self, limiter: RateLimiter) -> None:
        await limiter.acquire(CLIENT, budget=DAY, spend=BUDGET_MICRO)
        with pytest.raises(LimitExceeded):
            await limiter.acquire(CLIENT, budget=DAY, spend=1)
        await limiter.acquire(OTHER, budget=DAY, spend=BUDGET_MICRO)

    async def test_settle_brings_the_budget_to_the_real_cost(self, limiter: RateLimiter) -> None:
        reservation = (await limiter.acquire(CLIENT, budget=DAY, spend=30_000)).reservation
        await limiter.settle(reservation, 100, cost=Decimal("0.004"))
        assert await limiter.count(day_key()) == 4_000
        await limiter.acquire(CLIENT, budget=DAY, spend=46_000)  # the refund is budget again

    async def test_a_call_that_cost_more_than_it_reserved_puts_the_budget_in_debt(self, limiter: RateLimiter) -> None:
        reservation = (await limiter.acquire(CLIENT, budget=DAY, spend=40_000)).reservation
        await limiter.settle(reservation, 100, cost=Decimal("0.07"))
        assert await limiter.count(day_key()) == 70_000  # past the budget: the excess is charged all the same
        assert sample("claude_gateway_budget_used_ratio", {"client": CLIENT, "window": "day"}) == pytest.approx(1.4)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, budget=DAY, spend=0)  # even a call that costs nothing (an unpriced model)
        assert refused.value.limit == "budget"

    async def test_tokens_and_budget_settle_each_by_their_own_delta(self, limiter: RateLimiter) -> None:
        tokens = parse_many("1000/minute")
        admission = await limiter.acquire(CLIENT, tokens=tokens, cost=600, budget=DAY, spend=20_000)
        await limiter.settle(admission.reservation, 250, cost=Decimal("0.001"))
        assert await limiter.count(day_key()) == 1_000
        follow = await limiter.acquire(CLIENT, tokens=tokens, cost=750)
        assert follow.headers.as_headers()["X-RateLimit-Remaining-Tokens"] == "0"

    async def test_the_used_ratio_follows_reservations_and_settlements(self, limiter: RateLimiter) -> None:
        reservation = (await limiter.acquire(CLIENT, budget=DAY, spend=40_000)).reservation
        assert sample("claude_gateway_budget_used_ratio", {"client": CLIENT, "window": "day"}) == pytest.approx(0.8)
        await limiter.settle(reservation, 0, cost=Decimal("0.01"))
        assert sample("claude_gateway_budget_used_ratio", {"client": CLIENT, "window": "day"}) == pytest.approx(0.2)

    async def test_usage_is_recorded_by_model_in_both_windows(self, limiter: RateLimiter) -> None:
        usage = Usage(input=10, output=20, cache_read=30, cache_write=40, cache_write_1h=5)
        for _ in range(2):
            reservation = (await limiter.acquire(CLIENT, budget=DAY, spend=1_000)).reservation
            await limiter.settle(reservation, usage, model="claude-haiku-4-5", cost=Decimal("0.000123"))
        await limiter.record_usage(CLIENT, "claude-sonnet-4-6", Usage(output=7), Decimal("0.0001"), calls=3)
        for window in current_windows():
            found = await limiter.read_usage(window, CLIENT)
            assert found == {
                CLIENT: {
                    "claude-haiku-4-5": {
                        "input": 20,
                        "output": 40,
                        "cache_read": 60,
                        "cache_write": 80,
                        "cost_micro_usd": 246,
                        "requests": 2,
                    },
                    "claude-sonnet-4-6": {
                        "input": 0,
                        "output": 7,
                        "cache_read": 0,
                        "cache_write": 0,
                        "cost_micro_usd": 100,
                        "requests": 3,
                    },
                }
            }
        assert set(await limiter.read_usage(current_windows()[0], None)) == {CLIENT}
        assert await limiter.read_usage(current_windows()[0], OTHER) == {}


async def test_the_budget_rides_in_the_same_round_trip_as_the_limits(make_limiter: MakeLimiter, redis_url: str) -> None:
    """One admission with request, token and budget limits is one script call; 100 of them share a few round trips,
    and their settlements (usage records included) as many. (Redis counts socket reads: a batch larger than its
    16 KB read buffer takes several, which is why the batches here are kept to 100 calls.)"""
    limiter = await make_limiter(redis_url)
    observer = Redis.from_url(redis_url)
    requests, tokens = parse_many("100000/minute"), parse_many("100000000/minute")
    budget = Budget(day=Decimal(1000), month=Decimal(10000))
    warm = await limiter.acquire("warm", requests=requests, tokens=tokens, cost=10, budget=budget, spend=10)
    await limiter.settle(warm.reservation, Usage(output=1), model="claude-haiku-4-5", cost=Decimal("0.000005"))

    async def reads() -> int:
        return int((await observer.info("stats"))["total_reads_processed"])

    before = await reads()
    admissions = await asyncio.gather(
        *(
            limiter.acquire(f"c-{i % 5}", requests=requests, tokens=tokens, cost=900, budget=budget, spend=2_000)
            for i in range(100)
        )
    )
    admitted_trips = await reads() - before - 1
    before = await reads()
    await asyncio.gather(
        *(
            limiter.settle(a.reservation, Usage(input=5, output=2), model="claude-haiku-4-5", cost=Decimal("0.000015"))
            for a in admissions
        )
    )
    settled_trips = await reads() - before - 1
    held = [int(await observer.get(budget_key(current_windows()[0], f"c-{i}")) or 0) for i in range(5)]
    usage = await observer.hgetall(usage_key(current_windows()[1], "c-0", "claude-haiku-4-5"))
    await observer.aclose()
    assert held == [20 * 15] * 5
    assert usage[b"requests"] == b"20"
    assert admitted_trips <= 5, f"{admitted_trips} round trips for 100 admissions"
    assert settled_trips <= 5, f"{settled_trips} round trips for 100 settlements"


async def test_usage_and_budget_keys_expire_after_their_window(make_limiter: MakeLimiter, redis_url: str) -> None:
    limiter = await make_limiter(redis_url)
    observer = Redis.from_url(redis_url)
    reservation = (await limiter.acquire(CLIENT, budget=DAY, spend=100)).reservation
    await limiter.settle(reservation, Usage(output=3), model="claude-haiku-4-5", cost=Decimal("0.000015"))
    now = datetime.now(UTC).timestamp()
    try:
        for window in current_windows():
            keep_until = window.ends_at_s + USAGE_KEPT_PAST_WINDOW_S
            for key in (
                usage_key(window, CLIENT, "claude-haiku-4-5"),
                usage_models_key(window, CLIENT),
                usage_clients_key(window),
            ):
                ttl = await observer.ttl(key)
                assert keep_until - now - 5 <= ttl <= keep_until - now + 1, key
        budget_ttl = await observer.ttl(day_key())
        day_end = current_windows()[0].ends_at_s
        assert day_end - now - 5 <= budget_ttl <= day_end - now + BUDGET_KEY_GRACE_S + 1
        assert budget_ttl > day_end - now  # it outlives its window by the grace period
    finally:
        await observer.aclose()


class TestRedisOutage:
    """Budgets follow RATE_LIMIT_FAIL_MODE as the limits do (Redis killed: connections refused)."""

    async def test_fail_open_holds_budgets_per_process(
        self, make_limiter: MakeLimiter, outage_redis: RedisServer
    ) -> None:
        limiter = await make_limiter(outage_redis.url, redis_timeout_s=0.3)
        await limiter.acquire("warm-up", budget=DAY, spend=1)
        outage_redis.kill()
        reservation = (await limiter.acquire(CLIENT, budget=DAY, spend=BUDGET_MICRO)).reservation
        await limiter.settle(reservation, Usage(output=1), model="claude-haiku-4-5", cost=Decimal("0.05"))
        with pytest.raises(LimitExceeded) as refused:
            await limiter.acquire(CLIENT, budget=DAY, spend=1)
        assert refused.value.limit == "budget"
        assert await limiter.read_usage(current_windows()[0], CLIENT) != {}  # recorded in this process meanwhile

    async def test_fail_closed_answers_503(self, make_limiter: MakeLimiter, outage_redis: RedisServer) -> None:
        limiter = await make_limiter(outage_redis.url, redis_timeout_s=0.3, rate_limit_fail_mode="closed")
        await limiter.acquire("warm-up", budget=DAY, spend=1)
        outage_redis.kill()
        with pytest.raises(errors.Overloaded):
            await limiter.acquire(CLIENT, budget=DAY, spend=1)


def test_a_budget_ratio_goes_to_zero_when_its_window_ends() -> None:
    gauges = _BudgetGauges()
    gauges.roll()
    day = current_windows()[0]
    charge = Charge(day_key("gauge-client"), 60, 0.0, "budget", BUDGET_MICRO, day)
    gauges.show("gauge-client", charge, BUDGET_MICRO)
    assert sample("claude_gateway_budget_used_ratio", {"client": "gauge-client", "window": "day"}) == 1
    gauges._periods["day"] = "2000-01-01"  # as if the process last saw yesterday: the next admission rolls over
    gauges.roll()
    assert sample("claude_gateway_budget_used_ratio", {"client": "gauge-client", "window": "day"}) == 0
    yesterday = calendar_window("day", datetime(2000, 1, 1, tzinfo=UTC))
    gauges.show("gauge-client", Charge("k", 60, 0.0, "budget", BUDGET_MICRO, yesterday), BUDGET_MICRO * 2)
    assert sample("claude_gateway_budget_used_ratio", {"client": "gauge-client", "window": "day"}) == 0
