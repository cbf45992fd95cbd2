"""`retry_after_seconds`: whole seconds a client can obey, never below one."""

from __future__ import annotations

import pytest

from claude_gateway.errors import retry_after_seconds


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
