"""`retry_after_seconds`: whole seconds a client can obey, never below one; and the waits Anthropic asks for."""

from __future__ import annotations

import pytest

from claude_gateway.errors import UpstreamRateLimited, classify_status, retry_after_seconds, upstream_retry_after_s


@pytest.mark.parametrize(
    ("reset_at", "now", "expected"),
    [
        (100.0, 100.0, 1),  # resets now: still ask for a second, a 0 invites a hot loop
        (100.0, 150.0, 1),  # already past
        (-5.0, 0.0, 1),  # negative clock values
        (100.1, 100.0, 1),
        (101.0, 100.0, 1),
        (101.01, 100.0, 2),  # rounded up: retrying early would be refused again
        (160.0, 100.0, 60),
        (100.0 + 86_400 * 365, 100.0, 86_400 * 365),  # far future
    ],
)
def test_retry_after_seconds(reset_at: float, now: float, expected: int) -> None:
    assert retry_after_seconds(reset_at, now) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "oops", "retry-after": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({}, None),
    ],
)
def test_upstream_retry_after_s(headers: dict[str, str], expected: float | None) -> None:
    assert upstream_retry_after_s(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, "7"),
        ({"retry-after": "0.2"}, "1"),
        ({"retry-after-ms": "1500"}, "2"),
        ({"retry-after": "inf"}, "60"),
        ({}, "60"),
    ],
)
def test_an_upstream_429_passes_on_a_retry_after_a_client_can_obey(headers: dict[str, str], expected: str) -> None:
    error = classify_status(429, "rate_limit_error", headers)
    assert isinstance(error, UpstreamRateLimited)
    assert error.headers["Retry-After"] == expected
