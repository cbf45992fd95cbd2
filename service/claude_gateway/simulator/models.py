"""`GET /v1/models`: a small fixed catalogue, newest first. `/v1/messages` accepts any model name."""

from __future__ import annotations

from typing import Any

from claude_gateway.simulator.request import MAX_OUTPUT_TOKENS

# id -> (display name, release date), newest first as the API lists them.
MODELS: dict[str, tuple[str, str]] = {
    "claude-sonnet-4-6": ("Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    "claude-opus-4-6": ("Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    "claude-haiku-4-5-20251001": ("Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
}
_MAX_INPUT_TOKENS = 200_000


def model_info(model_id: str) -> dict[str, Any]:
    display_name, created_at = MODELS[model_id]
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": created_at,
        "lifecycle": "active",
        "max_input_tokens": _MAX_INPUT_TOKENS,
        "max_tokens": MAX_OUTPUT_TOKENS[model_id],
    }


CATALOGUE: list[dict[str, Any]] = [model_info(model_id) for model_id in MODELS]
