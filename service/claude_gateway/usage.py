"""Token usage as Anthropic reports it, and the one place where it is counted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claude_gateway import metrics


@dataclass(frozen=True, slots=True)
class Usage:
    """Anthropic's `usage`: `input` excludes cached tokens, which are reported apart."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        """Every token a limit counts: input + cache reads + cache writes + output."""
        return self.input + self.output + self.cache_read + self.cache_write

    @classmethod
    def from_wire(cls, usage: Any) -> Usage:
        """From a `usage` mapping (or SDK object); missing and null counts are zero."""
        if usage is None:
            return cls()

        def get(name: str) -> Any:
            return usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)

        return cls(
            input=int(get("input_tokens") or 0),
            output=int(get("output_tokens") or 0),
            cache_read=int(get("cache_read_input_tokens") or 0),
            cache_write=int(get("cache_creation_input_tokens") or 0),
        )

    def merge(self, later: Usage) -> Usage:
        """Streams report input in `message_start` and output in `message_delta`: keep the larger of each."""
        return Usage(
            input=max(self.input, later.input),
            output=max(self.output, later.output),
            cache_read=max(self.cache_read, later.cache_read),
            cache_write=max(self.cache_write, later.cache_write),
        )


def record_usage(model: str, client: str, usage: Usage) -> None:
    """Count tokens in `claude_gateway_tokens_total` (zero counts are not written)."""
    label = metrics.model_label(model)
    for direction, count in (
        ("input", usage.input),
        ("output", usage.output),
        ("cache_read", usage.cache_read),
        ("cache_write", usage.cache_write),
    ):
        if count:
            metrics.tokens(label, direction, client).inc(count)
