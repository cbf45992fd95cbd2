"""The price table shipped with the gateway, in `PRICES_FILE`'s shape (see `pricing`).

Source: Anthropic's public pricing page, https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing"
table: base input, 5-minute cache writes, 1-hour cache writes, cache hits and refreshes, output; "Batch processing":
50% off), and the model overview pages for Claude Opus 5 and Sonnet 5. Read on 2026-12-06.

Cache prices are written out although they follow Anthropic's multipliers (5-minute writes 1.25 x input, 1-hour
writes 2 x input, reads 0.1 x input), so that this table reads like the page it copies. Not modelled: long-context
prices (Sonnet 4 / 4.5 above 200K input tokens with the 1M-context beta), data-residency and priority-tier
multipliers, and server-tool fees (web search per 1,000 searches, code execution hours). Models not listed here
(newer families such as Fable or Mythos) are served, counted as unpriced, and can be priced with `PRICES_FILE`.
"""

from __future__ import annotations

from typing import Any

_OPUS_4_5 = {"input": 5, "output": 25, "cache_write_5m": 6.25, "cache_write_1h": 10, "cache_read": 0.50}
_OPUS_4 = {"input": 15, "output": 75, "cache_write_5m": 18.75, "cache_write_1h": 30, "cache_read": 1.50}
_SONNET_4 = {"input": 3, "output": 15, "cache_write_5m": 3.75, "cache_write_1h": 6, "cache_read": 0.30}
_SONNET_5 = {"input": 2, "output": 10, "cache_write_5m": 2.50, "cache_write_1h": 4, "cache_read": 0.20}
_HAIKU_4_5 = {"input": 1, "output": 5, "cache_write_5m": 1.25, "cache_write_1h": 2, "cache_read": 0.10}
_HAIKU_3_5 = {"input": 0.80, "output": 4, "cache_write_5m": 1, "cache_write_1h": 1.6, "cache_read": 0.08}
_HAIKU_3 = {"input": 0.25, "output": 1.25, "cache_write_5m": 0.30, "cache_write_1h": 0.50, "cache_read": 0.03}

# Keys are Anthropic's undated ids (the `model` label's values); dated ids (`-20250929`) and `-latest` resolve to
# them by rule, and `aliases` lists the other names Anthropic gives the same model.
SHIPPED_PRICES: dict[str, Any] = {
    "as_of": "2026-12-06",
    "source": "https://platform.claude.com/docs/en/about-claude/pricing",
    "batch_discount": 0.5,
    "models": {
        "claude-opus-5": _OPUS_4_5,
        "claude-opus-4-8": _OPUS_4_5,
        "claude-opus-4-7": _OPUS_4_5,
        "claude-opus-4-6": _OPUS_4_5,
        "claude-opus-4-5": _OPUS_4_5,
        "claude-opus-4-1": _OPUS_4,
        "claude-opus-4": {**_OPUS_4, "aliases": ["claude-opus-4-0"]},
        "claude-sonnet-5": _SONNET_5,
        "claude-sonnet-4-6": _SONNET_4,
        "claude-sonnet-4-5": _SONNET_4,
        "claude-sonnet-4": {**_SONNET_4, "aliases": ["claude-sonnet-4-0"]},
        "claude-3-7-sonnet": _SONNET_4,
        "claude-haiku-4-5": _HAIKU_4_5,
        "claude-3-5-haiku": _HAIKU_3_5,
        "claude-3-opus": _OPUS_4,
        "claude-3-haiku": _HAIKU_3,
    },
}
