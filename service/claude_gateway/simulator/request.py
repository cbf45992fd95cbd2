"""The Messages API request body, checked the way Anthropic checks it (messages named like `messages.1.role`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from claude_gateway.simulator.errors import invalid_request

JSONObject = dict[str, Any]

_ROLES = ("user", "assistant")
_TOOL_CHOICES = ("auto", "any", "tool", "none")
# Betas that widen what a body may hold: a `system` message after the first message, and `context_management`.
MID_CONVERSATION_SYSTEM_BETA = "mid-conversation-system-2026-04-07"
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
# The largest `max_tokens` of the catalogue's models (Anthropic's published limits); other names are not bounded.
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "claude-opus-4-6": 128_000,
    "claude-sonnet-4-6": 64_000,
    "claude-haiku-4-5-20251001": 64_000,
}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str
    max_tokens: int
    messages: list[JSONObject]
    system: str | list[JSONObject] | None
    stream: bool
    tools: list[JSONObject]
    tool_choice: JSONObject | None
    stop_sequences: list[str]
    # The request-level `cache_control` (automatic caching): a breakpoint on the last block.
    cache_control: JSONObject | None
    body: JSONObject

    @property
    def last_user_message(self) -> JSONObject | None:
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message
        return None

    def last_user_text(self) -> str:
        """The text of the last user message: where directives and tool names are looked for."""
        message = self.last_user_message
        if message is None:
            return ""
        content = message["content"]
        if isinstance(content, str):
            return content
        return "\n".join(block["text"] for block in content if block["type"] == "text")

    def last_user_has_tool_result(self) -> bool:
        message = self.last_user_message
        return (
            message is not None
            and isinstance(message["content"], list)
            and any(block["type"] == "tool_result" for block in message["content"])
        )


def parse_betas(values: list[bytes]) -> frozenset[str]:
    """The betas named by every `anthropic-beta` header (comma-separated, the header possibly repeated)."""
    return frozenset(name.strip() for value in values for name in value.decode("latin-1").split(",") if name.strip())


def parse_messages_request(
    body: object, *, for_count: bool = False, betas: frozenset[str] = frozenset()
) -> MessagesRequest:
    """Check a `/v1/messages` (or, `for_count`, a `/v1/messages/count_tokens`) body; 400 on the first fault.

    `betas` (from `anthropic-beta`) widen what is accepted, as with the API: see `MID_CONVERSATION_SYSTEM_BETA`,
    `CONTEXT_MANAGEMENT_BETA`."""
    if not isinstance(body, dict):
        raise invalid_request("Request body must be a JSON object")
    model = _required(body, "model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model: Input should be a non-empty string")
    max_tokens = 0
    if not for_count:
        max_tokens = _required(body, "max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise invalid_request("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise invalid_request("max_tokens: Input should be greater than or equal to 1")
        ceiling = MAX_OUTPUT_TOKENS.get(model)
        if ceiling is not None and max_tokens > ceiling:
            raise invalid_request(
                f"max_tokens: {max_tokens} > {ceiling}, which is the maximum allowed number of output tokens "
                f"for {model}"
            )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream: Input should be a valid boolean")
    if "context_management" in body and CONTEXT_MANAGEMENT_BETA not in betas:
        raise invalid_request("context_management: Extra inputs are not permitted")
    tools = _tools(body.get("tools"))
    return MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        messages=_messages(_required(body, "messages"), system_allowed=MID_CONVERSATION_SYSTEM_BETA in betas),
        system=_system(body.get("system")),
        stream=stream and not for_count,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        stop_sequences=_stop_sequences(body.get("stop_sequences")),
        cache_control=_object_or_none(body.get("cache_control"), "cache_control"),
        body=body,
    )


def _required(body: JSONObject, field: str) -> Any:
    if field not in body:
        raise invalid_request(f"{field}: Field required")
    return body[field]


def _object_or_none(value: object, where: str) -> JSONObject | None:
    if value is None or isinstance(value, dict):
        return value
    raise invalid_request(f"{where}: Input should be a valid dictionary")


def _messages(value: object, *, system_allowed: bool) -> list[JSONObject]:
    if not isinstance(value, list):
        raise invalid_request("messages: Input should be a valid list")
    if not value:
        raise invalid_request("messages: at least one message is required")
    last = len(value) - 1
    for index, message in enumerate(value):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise invalid_request(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in _ROLES and not (role == "system" and system_allowed and index > 0):
            raise invalid_request(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise invalid_request(f"{where}.content: Field required")
        content = message["content"]
        if isinstance(content, list):
            _blocks(content, f"{where}.content")
        elif not isinstance(content, str):
            raise invalid_request(f"{where}.content: Input should be a valid string or list of content blocks")
        if not content and not (index == last and role == "assistant"):
            raise invalid_request(
                f"{where}: all messages must have non-empty content except for the optional final assistant message"
            )
    if value[0]["role"] != "user":
        raise invalid_request('messages: first message must use the "user" role')
    _tool_pairs(value)
    return value


def _blocks(blocks: list[Any], where: str) -> None:
    for index, block in enumerate(blocks):
        at = f"{where}.{index}"
        if not isinstance(block, dict):
            raise invalid_request(f"{at}: Input should be a valid dictionary")
        kind = block.get("type")
        if not isinstance(kind, str):
            raise invalid_request(f"{at}.type: Field required")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise invalid_request(f"{at}.text: Input should be a valid string")
            if not text:
                raise invalid_request(f"{at}.text: text content blocks must be non-empty")
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise invalid_request(f"{at}: tool_use blocks need a string `id` and `name`")
            if not isinstance(block.get("input"), dict):
                raise invalid_request(f"{at}.input: Input should be a valid dictionary")
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise invalid_request(f"{at}.tool_use_id: Field required")
            content = block.get("content", "")
            if isinstance(content, list):
                _blocks(content, f"{at}.content")
            elif not isinstance(content, str):
                raise invalid_request(f"{at}.content: Input should be a valid string or list of content blocks")
        _object_or_none(block.get("cache_control"), f"{at}.cache_control")


def _tool_uses(message: JSONObject) -> list[str]:
    content = message["content"]
    if isinstance(content, str):
        return []
    return [block["id"] for block in content if block["type"] == "tool_use"]


def _tool_pairs(messages: list[JSONObject]) -> None:
    """Every `tool_use` answered by a `tool_result` in the next message, and no `tool_result` without one.

    A mid-conversation `system` message (under its beta) sits between turns without breaking a pair."""
    turns = [(index, message) for index, message in enumerate(messages) if message["role"] != "system"]
    for position, (index, message) in enumerate(turns):
        content = message["content"]
        if message["role"] != "user" or isinstance(content, str):
            continue
        results = [block["tool_use_id"] for block in content if block["type"] == "tool_result"]
        if not results:
            continue
        previous = turns[position - 1][1] if position > 0 else None
        asked = _tool_uses(previous) if previous is not None and previous["role"] == "assistant" else []
        unexpected = [tool_use_id for tool_use_id in results if tool_use_id not in asked]
        if unexpected:
            raise invalid_request(
                f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(unexpected)}. Each `tool_result` block must have a corresponding `tool_use` block "
                "in the previous message."
            )
    for position, (index, message) in enumerate(turns[:-1]):
        asked = _tool_uses(message) if message["role"] == "assistant" else []
        if not asked:
            continue
        following = turns[position + 1][1]["content"]
        answered = (
            set()
            if isinstance(following, str)
            else {block["tool_use_id"] for block in following if block["type"] == "tool_result"}
        )
        missing = [tool_use_id for tool_use_id in asked if tool_use_id not in answered]
        if missing:
            raise invalid_request(
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                "in the next message."
            )


def _system(value: object) -> str | list[JSONObject] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        _blocks(value, "system")
        if any(block["type"] != "text" for block in value):
            raise invalid_request("system: only text blocks are allowed in the system prompt")
        return value
    raise invalid_request("system: Input should be a valid string or list of text blocks")


def _tools(value: object) -> list[JSONObject]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_request("tools: Input should be a valid list")
    names: set[str] = set()
    for index, tool in enumerate(value):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise invalid_request(f"{where}: Input should be a valid dictionary")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_request(f"{where}.name: Field required")
        if name in names:
            raise invalid_request(f"tools: Tool names must be unique (duplicate: {name!r})")
        names.add(name)
        # Server tools (`type` like "web_search_20250305") carry no schema; custom tools must.
        if tool.get("type", "custom") == "custom" and not isinstance(tool.get("input_schema"), dict):
            raise invalid_request(f"{where}.input_schema: Field required")
        _object_or_none(tool.get("cache_control"), f"{where}.cache_control")
    return value


def _tool_choice(value: object, tools: list[JSONObject]) -> JSONObject | None:
    choice = _object_or_none(value, "tool_choice")
    if choice is None:
        return None
    kind = choice.get("type")
    if kind not in _TOOL_CHOICES:
        raise invalid_request("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise invalid_request("tool_choice.name: Field required")
        if all(tool["name"] != name for tool in tools):
            raise invalid_request(f"tool_choice: Tool '{name}' not found in the request's `tools`")
    elif kind in ("any",) and not tools:
        raise invalid_request("tool_choice: `tools` must be given when tool_choice.type is 'any'")
    return choice


def _stop_sequences(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_request("stop_sequences: Input should be a valid list of strings")
    return value


__all__ = [
    "CONTEXT_MANAGEMENT_BETA",
    "MAX_OUTPUT_TOKENS",
    "MID_CONVERSATION_SYSTEM_BETA",
    "JSONObject",
    "MessagesRequest",
    "parse_betas",
    "parse_messages_request",
]
