"""What a client is told about its limits: X-RateLimit-* headers, Retry-After, x-should-retry.

Pure arithmetic on window states, kept apart from storage so that every rule has a table test.

- ``X-RateLimit-Limit``      the window's amount (requests; tokens for a token limit)
- ``X-RateLimit-Remaining``  what is left of it now (never negative)
- ``X-RateLimit-Reset``      delta-seconds until the window resets, as the IETF draft's
                             ``RateLimit-Reset`` (not an epoch as GitHub's): whole seconds, rounded
                             up, at least 1, so it reads the same way as ``Retry-After``
- ``X-RateLimit-*-Tokens``   the same three for the tightest token limit (OpenAI's names)

The unsuffixed three describe the tightest request limit; a call with token limits only puts its
token limit there too. The tightest limit is the one with the least remaining, the later reset
breaking ties (it binds longer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from claude_gateway.errors import retry_after_seconds

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"
TOKENS_SUFFIX = "-Tokens"
RETRY_AFTER_HEADER = "Retry-After"
# Not a standard header: the official Anthropic SDKs read it before anything else to decide whether to retry.
SHOULD_RETRY_HEADER = "x-should-retry"

# The official SDKs retry a 429 by themselves (twice by default). Older ones obey Retry-After only up to 60 s
# and otherwise back off for a few seconds, to be refused again; the Python SDK 2.14 obeys any Retry-After and
# would hold a caller's request for an hour. Beyond this wait we send x-should-retry: false so that the 429
# reaches the caller, who can decide.
SDK_MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit's window as a client sees it."""

    limit: int
    remaining: int
    reset_after_s: int

    @classmethod
    def of(cls, amount: int, used: int, reset_at: float, now: float) -> Quota:
        """A window of `amount` with `used` spent, resetting at `reset_at` (seconds, same clock as `now`)."""
        return cls(limit=amount, remaining=max(0, amount - used), reset_after_s=retry_after_seconds(reset_at, now))

    def as_headers(self, suffix: str = "") -> dict[str, str]:
        return {
            LIMIT_HEADER + suffix: str(self.limit),
            REMAINING_HEADER + suffix: str(self.remaining),
            RESET_HEADER + suffix: str(self.reset_after_s),
        }


def tightest(quotas: Iterable[Quota]) -> Quota | None:
    """The quota that binds first: least remaining; on a tie, the one that resets later."""
    return min(quotas, key=lambda quota: (quota.remaining, -quota.reset_after_s), default=None)


@dataclass(frozen=True, slots=True)
class LimitHeaders:
    """The X-RateLimit-* values of one answer: the tightest request limit and the tightest token limit."""

    requests: Quota | None = None
    tokens: Quota | None = None

    def merge(self, later: LimitHeaders) -> LimitHeaders:
        """Combine what `hit_requests` and `reserve_tokens` returned (the later wins where both have one)."""
        return LimitHeaders(requests=later.requests or self.requests, tokens=later.tokens or self.tokens)

    def as_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        primary = self.requests or self.tokens
        if primary is not None:
            headers.update(primary.as_headers())
        if self.tokens is not None:
            headers.update(self.tokens.as_headers(TOKENS_SUFFIX))
        return headers


def should_retry(retry_after_s: int) -> bool:
    """Whether an official SDK, retrying on its own, would wait long enough for the request to pass."""
    return retry_after_s <= SDK_MAX_RETRY_AFTER_S


def refusal_headers(limits: LimitHeaders, retry_after_s: int, *, retryable: bool = True) -> dict[str, str]:
    """A 429's headers: the limits, Retry-After, and ``x-should-retry: false`` when retrying is futile."""
    headers = limits.as_headers()
    headers[RETRY_AFTER_HEADER] = str(retry_after_s)
    if not retryable or not should_retry(retry_after_s):
        headers[SHOULD_RETRY_HEADER] = "false"
    return headers
