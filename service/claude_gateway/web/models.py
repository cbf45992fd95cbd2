"""Request and response bodies of the gateway's own routes (the seed's `ChatRequest`, bounded by settings)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_MAX_TOKENS = 1024
MODEL_NAME_MAX_CHARS = 128


class ChatRequest(BaseModel):
    # Strict: `"max_tokens": true` or `"12"` is a client bug to report, not to guess at (as /v1/messages does).
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1)
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT)
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_MAX_CHARS)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)


@lru_cache(maxsize=8)
def bounded_chat_request(max_message_chars: int, max_tokens_limit: int) -> type[ChatRequest]:
    """`ChatRequest` with this deployment's bounds, so they show in the OpenAPI schema and 422s name them."""

    class BoundedChatRequest(ChatRequest):
        message: Annotated[str, StringConstraints(min_length=1, max_length=max_message_chars)]
        system_prompt: Annotated[str, StringConstraints(max_length=max_message_chars)] = DEFAULT_SYSTEM_PROMPT
        max_tokens: int = Field(default=min(DEFAULT_MAX_TOKENS, max_tokens_limit), ge=1, le=max_tokens_limit)

    BoundedChatRequest.__name__ = "ChatRequest"
    return BoundedChatRequest


class ChatResponse(BaseModel):
    text: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    model: str
    stop_reason: str | None = None
    id: str


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: str = Field(min_length=1)


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["processing"] = "processing"


class TaskStatus(BaseModel):
    task_id: str
    status: Literal["processing", "complete", "failed"]
    result: str | None = None
    error: str | None = None


class ErrorDetail(BaseModel):
    detail: str


# Anthropic's error object, as every /v1/ route answers errors (the gateway's own and Anthropic's relayed), for the
# OpenAPI document of the routes that read their bodies raw.
ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
