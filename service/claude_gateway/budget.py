"""How many tokens a request may spend before it has spent them: what its reservation holds until it settles."""

from __future__ import annotations

# English text averages about four characters a token; over-estimating only holds budget until settlement.
CHARS_PER_TOKEN = 4


def estimate_input_tokens(chars: int) -> int:
    return chars // CHARS_PER_TOKEN + 1
