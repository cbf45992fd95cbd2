"""`GET /v1/models`: a small fixed catalogue. `/v1/messages` accepts any model name; only this list is listed."""

from __future__ import annotations

from typing import Any

import orjson

# id -> (display name, release date)
MODELS: dict[str, tuple[str, str]] = {
    "claude-opus-4-6": ("Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    "claude-sonnet-4-6": ("Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    "claude-haiku-4-5-20251001": ("Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
}
_MAX_INPUT_TOKENS = 200_000
_MAX_OUTPUT_TOKENS = 64_000


def _info(model_id: str) -> dict[str, Any]:
    display_name, created_at = MODELS[model_id]
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": created_at,
        "lifecycle": "active",
        "max_input_tokens": _MAX_INPUT_TOKENS,
        "max_tokens": _MAX_OUTPUT_TOKENS,
    }


_PAGE = orjson.dumps(
    {
        "data": [_info(model_id) for model_id in MODELS],
        "has_more": False,
        "first_id": next(iter(MODELS)),
        "last_id": list(MODELS)[-1],
    }
)


def models_page() -> bytes:
    return _PAGE


def model_info(model_id: str) -> bytes:
    return orjson.dumps(_info(model_id))
