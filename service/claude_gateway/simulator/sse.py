"""The Messages API's server-sent events, as bytes.

A stream is `message_start`, then per content block `content_block_start` (the first followed by `ping`),
its deltas, `content_block_stop`; then `message_delta` (stop reason, cumulative usage) and `message_stop`.
Each event is `event: <type>\\ndata: <json>\\n\\n`. Text deltas of the vocabulary are encoded once, at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from claude_gateway.simulator.generation import VOCABULARY, Completion
from claude_gateway.simulator.tokens import InputUsage

_TEXT_DELTA_HEAD = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
)
_JSON_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"input_json_delta","partial_json":'
_DELTA_TAIL = b"}}\n\n"
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _text_delta(piece: str) -> bytes:
    return _TEXT_DELTA_HEAD + orjson.dumps(piece) + _DELTA_TAIL


# Every vocabulary word as a first (capitalised) and as a following (" word") token: the hot path is a lookup.
_TEXT_DELTAS: dict[str, bytes] = {
    piece: _text_delta(piece) for word in VOCABULARY for piece in (" " + word, word.capitalize())
}


def text_delta(piece: str) -> bytes:
    return _TEXT_DELTAS.get(piece) or _text_delta(piece)


def json_delta(index: int, piece: str) -> bytes:
    return (_JSON_DELTA_HEAD % index) + orjson.dumps(piece) + _DELTA_TAIL


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_stop(index: int) -> bytes:
    return b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % index


def error_event(error_type: str, message: str) -> bytes:
    return event("error", {"type": "error", "error": {"type": error_type, "message": message}})


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """`head` is sent at once, `paced[i]` when output token i is due, `tail` right after the last token."""

    head: bytes
    paced: list[bytes]
    tail: bytes


def message_start(message_id: str, model: str, usage: InputUsage) -> bytes:
    return event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage.as_dict(), "output_tokens": 1, "service_tier": "standard"},
            },
        },
    )


def message_delta(completion: Completion, usage: InputUsage) -> bytes:
    return event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": completion.stop_reason, "stop_sequence": completion.stop_sequence},
            # Cumulative, as Anthropic sends them; the SDK overwrites its snapshot with these.
            "usage": {
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "output_tokens": completion.output_tokens,
            },
        },
    )


def plan_stream(message_id: str, model: str, usage: InputUsage, completion: Completion) -> StreamPlan:
    head = [message_start(message_id, model, usage)]
    paced: list[bytes] = []
    # Framing that must precede the next paced token (a block boundary between two blocks).
    pending = b""
    index = 0
    if completion.text_pieces is not None:
        head += (block_start(0, {"type": "text", "text": ""}), PING)
        paced.extend(text_delta(piece) for piece in completion.text_pieces)
        pending = block_stop(0)
        index = 1
    tool = completion.tool
    if tool is not None:
        opening = block_start(index, {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}})
        # Anthropic opens a tool's input with an empty partial_json.
        empty_input = json_delta(index, "")
        if index == 0:
            head += (opening, PING, empty_input)
        else:
            pending += opening + empty_input
        for piece in tool.json_pieces:
            paced.append(pending + json_delta(index, piece))
            pending = b""
        pending += block_stop(index)
    if completion.text_pieces is None and tool is None:
        head.append(PING)
    tail = pending + message_delta(completion, usage) + MESSAGE_STOP
    return StreamPlan(b"".join(head), paced, tail)
