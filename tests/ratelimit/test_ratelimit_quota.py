"""The pure rules: header values, the tightest limit, Retry-After and x-should-retry."""

from __future__ import annotations

import pytest

from claude_gateway.admission.ratelimit.quota import (
    SDK_MAX_RETRY_AFTER_S,
    LimitHeaders,
    Quota,
    refusal_headers,
    should_retry,
    tightest,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("amount", "used", "reset_in_s", "remaining", "reset_after_s"),
    [
        (10, 0, 60.0, 10, 60),
        (10, 3, 59.2, 7, 60),  # rounded up: waiting 59 s would be too early
        (10, 10, 12.0, 0, 12),
        (10, 14, 12.0, 0, 12),  # over-charged by a settlement: never negative
        (1000, 250, 0.001, 750, 1),  # about to reset: at least 1
        (5, 1, 0.0, 4, 1),
        (5, 1, -3.0, 4, 1),  # already past (clock skew): at least 1
        (100, 1, 86_400.0, 99, 86_400),
    ],
)
def test_quota_of(amount: int, used: int, reset_in_s: float, remaining: int, reset_after_s: int) -> None:
    quota = Quota.of(amount, used, NOW + reset_in_s, NOW)
    assert quota == Quota(limit=amount, remaining=remaining, reset_after_s=reset_after_s)


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        ([], None),
        ([Quota(10, 4, 30)], Quota(10, 4, 30)),
        ([Quota(10, 9, 60), Quota(1000, 998, 86_400)], Quota(10, 9, 60)),  # least remaining
        ([Quota(10, 0, 20), Quota(1000, 0, 3600)], Quota(1000, 0, 3600)),  # tie: the longer wait
        ([Quota(1000, 5, 3600), Quota(10, 6, 5)], Quota(1000, 5, 3600)),
    ],
)
def test_tightest(quotas: list[Quota], expected: Quota | None) -> None:
    assert tightest(quotas) == expected


def test_headers_of_request_limits() -> None:
    assert LimitHeaders(requests=Quota(10, 7, 42)).as_headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "7",
        "X-RateLimit-Reset": "42",
    }


def test_headers_of_both_kinds() -> None:
    headers = LimitHeaders(requests=Quota(10, 7, 42), tokens=Quota(5000, 1200, 30)).as_headers()
    assert headers == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "7",
        "X-RateLimit-Reset": "42",
        "X-RateLimit-Limit-Tokens": "5000",
        "X-RateLimit-Remaining-Tokens": "1200",
        "X-RateLimit-Reset-Tokens": "30",
    }


def test_headers_of_token_limits_only_fill_the_main_three_too() -> None:
    headers = LimitHeaders(tokens=Quota(5000, 1200, 30)).as_headers()
    assert headers["X-RateLimit-Limit"] == "5000"
    assert headers["X-RateLimit-Remaining-Tokens"] == "1200"


def test_no_limits_no_headers() -> None:
    assert LimitHeaders().as_headers() == {}


def test_merge_keeps_both_kinds() -> None:
    requests = LimitHeaders(requests=Quota(10, 7, 42))
    tokens = LimitHeaders(tokens=Quota(5000, 1200, 30))
    assert requests.merge(tokens) == LimitHeaders(requests=Quota(10, 7, 42), tokens=Quota(5000, 1200, 30))
    assert requests.merge(LimitHeaders(requests=Quota(10, 6, 41))).requests == Quota(10, 6, 41)


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [(1, True), (30, True), (SDK_MAX_RETRY_AFTER_S, True), (SDK_MAX_RETRY_AFTER_S + 1, False), (86_400, False)],
)
def test_should_retry(retry_after_s: int, expected: bool) -> None:
    assert should_retry(retry_after_s) is expected


@pytest.mark.parametrize(
    ("retry_after_s", "retryable", "should_retry_header"),
    [
        (1, True, None),
        (60, True, None),  # the SDKs wait up to 60 s as told
        (61, True, "false"),  # beyond, they would retry too early: tell them not to
        (3600, True, "false"),
        (5, False, "false"),  # can never pass (cost above the whole limit)
    ],
)
def test_refusal_headers(retry_after_s: int, retryable: bool, should_retry_header: str | None) -> None:
    headers = refusal_headers(LimitHeaders(requests=Quota(10, 0, retry_after_s)), retry_after_s, retryable=retryable)
    assert headers["Retry-After"] == str(retry_after_s)
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers.get("x-should-retry") == should_retry_header
