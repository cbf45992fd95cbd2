"""What Claude Code sends is accepted under the betas it names, and refused without them with the API's wording."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from .helpers import MODEL, body, user

MID_CONVERSATION_SYSTEM = "mid-conversation-system-2026-04-07"
CONTEXT_MANAGEMENT = "context-management-2025-06-27"
# The betas Claude Code 2.1 names on every `/v1/messages?beta=true` request.
CLAUDE_CODE_BETAS = (
    "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,"
    f"{CONTEXT_MANAGEMENT},prompt-caching-scope-2026-01-05,{MID_CONVERSATION_SYSTEM},effort-2025-11-24"
)
WITH_SYSTEM_MESSAGE = [
    {"role": "user", "content": [{"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}}]},
    {"role": "system", "content": "Available agent types: claude, Explore."},
]


def claude_code_body(**fields: Any) -> dict[str, Any]:
    """A body shaped like Claude Code's first request."""
    return body(
        model="claude-opus-4-6",
        max_tokens=128_000,
        stream=False,
        messages=WITH_SYSTEM_MESSAGE,
        system=[
            {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        tools=[
            {"name": "Bash", "description": "Run a command.", "input_schema": {"type": "object", "properties": {}}},
            {"type": "future_tool_20990101", "name": "future"},
        ],
        metadata={"user_id": '{"device_id":"d","session_id":"s"}'},
        thinking={"type": "adaptive"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high"},
        **fields,
    )


class TestUnderTheBetas:
    async def test_claude_codes_request_is_accepted(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/messages?beta=true", json=claude_code_body(), headers={"anthropic-beta": CLAUDE_CODE_BETAS}
        )

        assert response.status_code == 200, response.text
        assert response.json()["type"] == "message"

    async def test_betas_may_come_in_repeated_headers(self, http: httpx.AsyncClient) -> None:
        headers = [("anthropic-beta", MID_CONVERSATION_SYSTEM), ("anthropic-beta", CONTEXT_MANAGEMENT)]
        response = await http.post("/v1/messages", json=claude_code_body(), headers=headers)

        assert response.status_code == 200, response.text

    async def test_count_tokens_agrees_with_the_usage_reported(self, http: httpx.AsyncClient) -> None:
        headers = {"anthropic-beta": CLAUDE_CODE_BETAS}
        message = await http.post("/v1/messages", json=claude_code_body(), headers=headers)
        counted_body = {key: value for key, value in claude_code_body().items() if key not in ("max_tokens", "stream")}
        counted = await http.post("/v1/messages/count_tokens", json=counted_body, headers=headers)

        usage = message.json()["usage"]
        total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
        assert counted.status_code == 200, counted.text
        assert counted.json() == {"input_tokens": total}

    async def test_the_sdk_sends_them(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.beta.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}],
            betas=[MID_CONVERSATION_SYSTEM],
        )

        assert message.content[0].type == "text"


class TestWithoutTheBetas:
    async def test_a_mid_conversation_system_message_is_refused_verbatim(
        self, client: anthropic.AsyncAnthropic
    ) -> None:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await client.messages.create(
                model=MODEL,
                max_tokens=64,
                messages=[{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}],
            )

        assert raised.value.body == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "messages.1.role: Input should be 'user' or 'assistant'",
            },
            "request_id": raised.value.request_id,
        }

    async def test_a_system_message_first_is_refused_even_under_the_beta(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/messages",
            json=body(messages=[{"role": "system", "content": "Hi"}, *user("Hello")]),
            headers={"anthropic-beta": MID_CONVERSATION_SYSTEM},
        )

        assert response.status_code == 400
        assert response.json()["error"]["message"] == "messages.0.role: Input should be 'user' or 'assistant'"

    async def test_context_management_needs_its_beta(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=body(context_management={"edits": []}))

        assert response.status_code == 400
        assert response.json()["error"] == {
            "type": "invalid_request_error",
            "message": "context_management: Extra inputs are not permitted",
        }


class TestMaxTokens:
    @pytest.mark.parametrize(("model", "ceiling"), [("claude-opus-4-6", 128_000), ("claude-sonnet-4-6", 64_000)])
    async def test_up_to_the_models_maximum(self, http: httpx.AsyncClient, model: str, ceiling: int) -> None:
        accepted = await http.post("/v1/messages", json=body(model=model, max_tokens=ceiling))
        refused = await http.post("/v1/messages", json=body(model=model, max_tokens=ceiling + 1))

        assert accepted.status_code == 200
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == (
            f"max_tokens: {ceiling + 1} > {ceiling}, which is the maximum allowed number of output tokens for {model}"
        )

    async def test_unknown_models_are_not_bounded(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=body(model="claude-opus-4-8", max_tokens=128_000))

        assert response.status_code == 200


class TestRoot:
    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    async def test_the_base_url_answers(self, http: httpx.AsyncClient, method: str) -> None:
        response = await http.request(method, "/")

        assert response.status_code == 200
