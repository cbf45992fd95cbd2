"""The simulator's settings: one frozen object, checked when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated model behaves; every value can be overridden per request (see the package docstring).

    `tokens_per_s` of 0 (or infinity) sends every token at once after the first-token delay.
    `api_key` None accepts any non-empty key; a string accepts only that key.
    """

    ttft_ms: float = 50.0
    tokens_per_s: float = 400.0
    seed: int = 0
    api_key: str | None = None
    default_output_tokens: int = 64
    # How long a message batch stays `in_progress` before it ends: short, so that tests and `make run` see it end.
    batch_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.ttft_ms) or self.ttft_ms < 0:
            raise ValueError(f"ttft_ms: {self.ttft_ms!r} must be a finite number >= 0")
        if math.isnan(self.tokens_per_s) or self.tokens_per_s < 0:
            raise ValueError(f"tokens_per_s: {self.tokens_per_s!r} must be >= 0 (0: no pacing)")
        if self.default_output_tokens < 1:
            raise ValueError(f"default_output_tokens: {self.default_output_tokens!r} must be >= 1")
        if not math.isfinite(self.batch_delay_s) or self.batch_delay_s < 0:
            raise ValueError(f"batch_delay_s: {self.batch_delay_s!r} must be a finite number >= 0")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key: must be None (any key) or a non-empty string")
