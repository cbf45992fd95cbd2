"""What the gateway reads of an Anthropic API request body, and nothing more: the rest is relayed as it came.

`/v1/messages` reads `model` (policy, metrics, spans), `max_tokens` (the token reservation, policy), `stream` (how
to answer) and `metadata.user_id` (attribution); the key's policy reads `service_tier`, `mcp_servers` and `tools`.
`/v1/messages/count_tokens` reads `model`. Anything else (unknown fields, roles, content block types) is Anthropic's
to judge: the gateway refuses only what it cannot act on, with the API's own wording, and a body in which a field it
reads appears twice (`duplicate_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from claude_gateway.duplicate_fields import DuplicateFields
from claude_gateway.errors import InvalidRequest

# A model name is recorded on the log line and spans; no real one comes near this (the API answers 404 to a name it
# does not know, so refusing a longer one refuses nothing that could have run).
MODEL_NAME_MAX_CHARS = 256
# Attribution values (`metadata.user_id`, Claude Code's session id) recorded on the log line and spans: Claude Code's
# `user_id` (a small JSON object of ids) is under 200 characters; a longer one is cut to this.
ATTRIBUTION_MAX_CHARS = 256

MESSAGES_DUPLICATES = DuplicateFields(
    ("model", "max_tokens", "stream", "service_tier", "mcp_servers", "tools", "metadata")
)
COUNT_TOKENS_DUPLICATES = DuplicateFields(("model",))


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A `/v1/messages` body as the gateway reads it: the decoded object and the fields it acts on."""

    body: dict[str, Any]
    model: str
    max_tokens: int
    stream: bool
    user_id: str | None


def read_messages_request(raw: bytes) -> MessagesRequest:
    """The fields of a Messages body the gateway acts on; 400 `invalid_request_error` when it cannot read them."""
    body = _object(raw, MESSAGES_DUPLICATES)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: Input should be a valid boolean")
    return MessagesRequest(body, _model(body), _max_tokens(body), stream, metadata_user_id(body))


def read_count_tokens_request(raw: bytes) -> tuple[dict[str, Any], str]:
    """A count_tokens body and its model; 400 when it has none the gateway can read."""
    body = _object(raw, COUNT_TOKENS_DUPLICATES)
    return body, _model(body)


def bounded_attribution(value: object) -> str | None:
    """An attribution value fit for a log line or a span: a printable string, cut to `ATTRIBUTION_MAX_CHARS`."""
    if not isinstance(value, str) or not value:
        return None
    value = value[:ATTRIBUTION_MAX_CHARS]
    return value if value.isprintable() else None


def metadata_user_id(body: dict[str, Any]) -> str | None:
    """`metadata.user_id`, the end user the official SDKs (and Claude Code) name, bounded for recording."""
    metadata = body.get("metadata")
    return bounded_attribution(metadata.get("user_id")) if isinstance(metadata, dict) else None


def _object(raw: bytes, duplicates: DuplicateFields) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    duplicated = duplicates.find(raw)
    if duplicated is not None:
        raise InvalidRequest(f"{duplicated}: appears more than once in the request body; send it once")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("model: Field required")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Input should be a non-empty string")
    if len(model) > MODEL_NAME_MAX_CHARS:
        raise InvalidRequest(f"model: String should have at most {MODEL_NAME_MAX_CHARS} characters")
    return model


def _max_tokens(body: dict[str, Any]) -> int:
    """`max_tokens` as the API reads it (an integer, or a float with no fraction); its range is the API's to judge."""
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required")
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        return int(max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens: Input should be a valid integer")
    return max_tokens
