"""Token usage as Anthropic reports it, what it cost, and the one place where both are counted."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from claude_gateway import metrics, pricing
from claude_gateway.logs import get_logger

log = get_logger("claude_gateway.usage")

# Unpriced models are logged once each per process; past this many names (a client inventing them) no more lines.
UNPRICED_LOGGED_MAX = 256
_unpriced_logged: set[str] = set()


@dataclass(frozen=True, slots=True)
class Usage:
    """Anthropic's `usage`: `input` excludes cached tokens, which are reported apart. `cache_write` is every cache
    write; `cache_write_1h` the part of it written with the 1-hour lifetime (the rest is 5-minute writes)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0

    @property
    def total(self) -> int:
        """Every token a limit counts: input + cache reads + cache writes + output."""
        return self.input + self.output + self.cache_read + self.cache_write

    @property
    def cache_write_5m(self) -> int:
        return self.cache_write - self.cache_write_1h

    @classmethod
    def from_wire(cls, usage: Any) -> Usage:
        """From a `usage` mapping (or SDK object); missing and null counts are zero. Cache writes are split by
        lifetime from `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`; when only
        `cache_creation_input_tokens` is given, they count as 5-minute writes (the default lifetime)."""
        if usage is None:
            return cls()
        creation = _field(usage, "cache_creation")
        split_5m = _count(creation, "ephemeral_5m_input_tokens")
        split_1h = _count(creation, "ephemeral_1h_input_tokens")
        cache_write = max(_count(usage, "cache_creation_input_tokens"), split_5m + split_1h)
        return cls(
            input=_count(usage, "input_tokens"),
            output=_count(usage, "output_tokens"),
            cache_read=_count(usage, "cache_read_input_tokens"),
            cache_write=cache_write,
            cache_write_1h=min(split_1h, cache_write),
        )

    def merge(self, later: Usage) -> Usage:
        """Streams report input in `message_start` and output in `message_delta` (whose usage carries no split of
        cache writes by lifetime): keep the larger of each."""
        return Usage(
            input=max(self.input, later.input),
            output=max(self.output, later.output),
            cache_read=max(self.cache_read, later.cache_read),
            cache_write=max(self.cache_write, later.cache_write),
            cache_write_1h=max(self.cache_write_1h, later.cache_write_1h),
        )


def _field(source: Any, name: str) -> Any:
    """A field of a wire mapping or of an SDK object (None when either is missing)."""
    if source is None:
        return None
    return source.get(name) if isinstance(source, dict) else getattr(source, name, None)


def _count(source: Any, name: str) -> int:
    """A token count: missing, null or not a number is zero."""
    value = _field(source, name)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def cost_usd(model: str, usage: Usage | None, *, batch: bool = False) -> Decimal | None:
    """What `usage` of `model` cost at the active prices (a Message Batch's at the batch discount); None without
    usage or without a price for the model."""
    if usage is None:
        return None
    return pricing.active().cost(model, usage, batch=batch)


# The cost of a whole (non-streamed) answer, on the answer; a stream's is on its log line and span.
COST_HEADER = "X-Gateway-Cost-USD"


def cost_header(model: str, usage: Usage | None) -> dict[str, str]:
    """`X-Gateway-Cost-USD: 0.001350` for a priced model's answer; nothing when the cost is not known."""
    cost = cost_usd(model, usage)
    return {COST_HEADER: pricing.format_usd(cost)} if cost is not None else {}


def record_usage(model: str, client: str, usage: Usage, *, batch: bool = False) -> Decimal | None:
    """Count tokens in `claude_gateway_tokens_total` (zero counts are not written) and their cost in
    `claude_gateway_cost_usd_total` (`batch`: a Message Batch's results, at the batch discount); a model without a
    price counts its tokens in `claude_gateway_unpriced_tokens_total` instead, and is logged once. Returns the cost
    (None when unpriced)."""
    label = metrics.model_label(model)
    for direction, count in (
        ("input", usage.input),
        ("output", usage.output),
        ("cache_read", usage.cache_read),
        ("cache_write", usage.cache_write),
    ):
        if count:
            metrics.tokens(label, direction, client).inc(count)
    cost = cost_usd(model, usage, batch=batch)
    if cost is None:
        if usage.total:
            metrics.unpriced_tokens(label).inc(usage.total)
            _log_unpriced(model)
    elif cost:
        metrics.cost_usd(client, label).inc(float(cost))
    return cost


def _log_unpriced(model: str) -> None:
    if model in _unpriced_logged or len(_unpriced_logged) >= UNPRICED_LOGGED_MAX:
        return
    _unpriced_logged.add(model)
    log.warning(
        "model has no price: its tokens are counted in claude_gateway_unpriced_tokens_total, not in the cost",
        extra={"model": model[:128]},
    )
