"""Input token counts and prompt-cache accounting.

Counting: one token per `CHARS_PER_TOKEN` characters (rounded up) of the tools' JSON, the system prompt's text
and the messages' content (text, tool inputs as JSON, tool results' text, other blocks as JSON).

Caching, in Anthropic's order tools -> system -> messages: a block with `cache_control` (or the last block, when
the request itself carries `cache_control`) ends a cacheable prefix. The longest prefix seen before, within its
TTL, is reported as `cache_read_input_tokens`; the rest of the prefix up to the last breakpoint as
`cache_creation_input_tokens`; `input_tokens` is what follows the last breakpoint. Unlike Anthropic there is no
minimum cacheable length, so that short test prompts exercise the accounting.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from claude_gateway.simulator.request import JSONObject, MessagesRequest

CHARS_PER_TOKEN = 4
# Anthropic's two cache lifetimes: the default "5m" and the opt-in "1h".
CACHE_TTL_DEFAULT_S = 300.0
CACHE_TTL_LONG_S = 3600.0
# Enough distinct prefixes for a long benchmark without letting memory grow without bound.
CACHE_MAX_ENTRIES = 10_000
_DIGEST_BYTES = 16


@dataclass(frozen=True, slots=True)
class InputUsage:
    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def as_dict(self) -> dict[str, Any]:
        created = self.cache_creation_input_tokens
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": created - self.cache_creation_1h_input_tokens,
                "ephemeral_1h_input_tokens": self.cache_creation_1h_input_tokens,
            },
        }


@dataclass(frozen=True, slots=True)
class _Breakpoint:
    tokens: int
    digest: bytes
    ttl_s: float


def tokens_for_chars(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def count_input_tokens(request: MessagesRequest) -> int:
    """Every input token, cached or not: what `/v1/messages/count_tokens` answers."""
    return tokens_for_chars(sum(segment.chars for segment in _segments(request)))


@dataclass(frozen=True, slots=True)
class _Segment:
    chars: int
    item: JSONObject | str
    # Where it sits (a tool, the system prompt, the start of a user or assistant message, a later block of one):
    # the same text elsewhere is another prefix.
    place: bytes


_TOOL, _SYSTEM, _SAME_MESSAGE = b"\x00tool", b"\x00system", b"\x00+"
_MESSAGE_START = {"user": b"\x00user", "assistant": b"\x00assistant", "system": b"\x00system-message"}


def _segments(request: MessagesRequest) -> list[_Segment]:
    """The request's content in cache-prefix order: tools, system, messages."""
    segments = [_Segment(len(orjson.dumps(_without_cache_control(tool))), tool, _TOOL) for tool in request.tools]
    system = request.system
    if isinstance(system, str):
        segments.append(_Segment(len(system), system, _SYSTEM))
    elif system is not None:
        segments.extend(_Segment(len(block["text"]), block, _SYSTEM) for block in system)
    for message in request.messages:
        content = message["content"]
        start = _MESSAGE_START[message["role"]]
        if isinstance(content, str):
            segments.append(_Segment(len(content), content, start))
        else:
            segments.extend(
                _Segment(_block_chars(block), block, start if index == 0 else _SAME_MESSAGE)
                for index, block in enumerate(content)
            )
    return segments


def _block_chars(block: JSONObject) -> int:
    kind = block["type"]
    if kind == "text":
        return len(block["text"])
    if kind == "tool_use":
        return len(block["name"]) + len(orjson.dumps(block["input"]))
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return len(content)
        return sum(_block_chars(inner) for inner in content)
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return len(block["thinking"])
    return len(orjson.dumps(_without_cache_control(block)))


def _without_cache_control(block: JSONObject) -> JSONObject:
    if "cache_control" not in block:
        return block
    return {key: value for key, value in block.items() if key != "cache_control"}


def _ttl_s(cache_control: JSONObject) -> float:
    return CACHE_TTL_LONG_S if cache_control.get("ttl") == "1h" else CACHE_TTL_DEFAULT_S


def _breakpoints(request: MessagesRequest) -> tuple[int, list[_Breakpoint]]:
    """The total tokens and each cacheable prefix: its tokens and a digest of model + content + places."""
    hasher = hashlib.blake2b(request.model.encode(), digest_size=_DIGEST_BYTES)
    chars = 0
    found: list[_Breakpoint] = []
    segments = _segments(request)
    for index, segment in enumerate(segments):
        chars += segment.chars
        hasher.update(segment.place)
        item = segment.item
        if isinstance(item, str):
            hasher.update(orjson.dumps(item))
            cache_control = None
        else:
            hasher.update(orjson.dumps(_without_cache_control(item), option=orjson.OPT_SORT_KEYS))
            cache_control = item.get("cache_control")
        if cache_control is None and index == len(segments) - 1:
            cache_control = request.cache_control
        if cache_control is not None:
            found.append(_Breakpoint(tokens_for_chars(chars), hasher.copy().digest(), _ttl_s(cache_control)))
    return tokens_for_chars(chars), found


class PromptCache:
    """Prefixes seen recently, least recently used first; bounded and expiring like Anthropic's cache."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def clear(self) -> None:
        self._expiry.clear()

    def account(self, request: MessagesRequest, *, has_cache_control: bool) -> InputUsage:
        """The request's input usage, recording its prefixes. `has_cache_control` False skips the hashing."""
        if not has_cache_control:
            return InputUsage(count_input_tokens(request))
        total, breakpoints = _breakpoints(request)
        if not breakpoints:
            return InputUsage(total)
        now = time.monotonic()
        read = 0
        for breakpoint in reversed(breakpoints):
            expires = self._expiry.get(breakpoint.digest)
            if expires is not None and expires > now:
                read = breakpoint.tokens
                break
        last = breakpoints[-1]
        created = max(0, last.tokens - read)
        for breakpoint in breakpoints:
            self._expiry[breakpoint.digest] = now + breakpoint.ttl_s
            self._expiry.move_to_end(breakpoint.digest)
        while len(self._expiry) > self._max_entries:
            self._expiry.popitem(last=False)
        return InputUsage(
            input_tokens=max(0, total - read - created),
            cache_creation_input_tokens=created,
            cache_read_input_tokens=read,
            cache_creation_1h_input_tokens=created if last.ttl_s == CACHE_TTL_LONG_S else 0,
        )
