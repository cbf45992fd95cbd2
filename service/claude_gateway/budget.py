"""One request's token budget: reserved before the call (input estimate + `max_tokens`), settled to real usage after.

Reserving the worst case up front is what stops a client overrunning its token limit with parallel requests; the
settlement gives back what was not used (or charges what an estimate missed).
"""

from __future__ import annotations

from claude_gateway.auth import ClientKey
from claude_gateway.ratelimit import RateLimiter, TokenReservation
from claude_gateway.ratelimit.quota import TOKENS_SUFFIX
from claude_gateway.usage import Usage

# English text averages about four characters a token; over-estimating only holds budget until settlement.
CHARS_PER_TOKEN = 4


def estimate_input_tokens(chars: int) -> int:
    return chars // CHARS_PER_TOKEN + 1


class TokenBudget:
    __slots__ = ("_limiter", "_reservation")

    def __init__(self, limiter: RateLimiter, reservation: TokenReservation | None) -> None:
        self._limiter = limiter
        self._reservation = reservation

    @classmethod
    async def reserve(cls, limiter: RateLimiter, client: ClientKey, cost: int) -> TokenBudget:
        """Raises `RateLimited` (limit `tokens`) when the worst case does not fit."""
        if not client.token_limits:
            return cls(limiter, None)
        return cls(limiter, await limiter.reserve_tokens(client.name, client.token_limits, cost))

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-*-Tokens`: where the token limit stands after this reservation."""
        if self._reservation is None or self._reservation.headers.tokens is None:
            return {}
        return self._reservation.headers.tokens.as_headers(TOKENS_SUFFIX)

    async def settle(self, usage: Usage | None) -> None:
        if self._reservation is not None:
            reservation, self._reservation = self._reservation, None
            await self._limiter.settle(reservation, usage.total if usage else 0)
