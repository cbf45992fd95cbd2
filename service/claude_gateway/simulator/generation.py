"""What the simulated model says: deterministic for (seed, model, system, messages, tools).

Text: words from `VOCABULARY`, one output token per word; the first word is capitalised, the others carry a
leading space (a prefilled assistant turn is continued, so its first word has a space too). The word sequence does
not depend on `max_tokens` or the controls: a shorter answer is a prefix of a longer one, and streaming and
non-streaming answers to the same request agree.

Tool use, when the request has `tools` (and `tool_choice` is not `none`):
- `tool_choice` `{"type": "tool", "name": N}` calls N; `{"type": "any"}` calls the first tool whose name appears in
  the last user message's text, else the first tool. A forced call has no text before it, as with Anthropic.
- otherwise (`auto`) the first tool whose name appears (case-insensitively) in the last user message's text is
  called after a short text block, unless that message carries `tool_result` blocks (the model then answers).
With the `bash_write=PATH` control and a tool named `Bash` (Claude Code's), the answer is a short text block and a
`tool_use` of `Bash` with `{"command": "printf ... > PATH", "description": ...}`, unless the last user message
carries `tool_result` blocks: then a text answer, which ends the agent's turn.
The input is made from the tool's `input_schema` (every property; enums take their first value); its JSON is
streamed in `input_json_delta` pieces of `CHARS_PER_TOKEN` characters, one output token each. When `max_tokens`
cannot hold the whole call the model answers in text only, cut at `max_tokens`.
"""

from __future__ import annotations

import hashlib
import random
import shlex
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from claude_gateway.simulator.ids import new_id
from claude_gateway.simulator.request import JSONObject, MessagesRequest
from claude_gateway.simulator.tokens import CHARS_PER_TOKEN

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]

VOCABULARY: tuple[str, ...] = (
    "the", "model", "answers", "with", "a", "steady", "stream", "of", "words", "that", "mean", "little",
    "but", "arrive", "on", "time", "every", "token", "is", "one", "word", "and", "each", "plain", "comes",
    "from", "this", "short", "list", "so", "tests", "can", "predict", "them", "gateway", "client", "server",
    "request", "response", "message", "system", "prompt", "cache", "limit", "rate", "queue", "worker",
    "latency", "budget", "signal", "metric", "trace", "span", "error", "retry", "backoff", "window",
    "bucket", "shard", "replica", "cluster", "region", "node", "pod", "deploy", "rollout", "health",
    "probe", "ready", "live", "graceful", "drain", "timeout", "socket", "header", "body", "chunk", "event",
    "delta", "usage", "input", "output", "count", "total", "fast", "slow", "clear", "bright", "quiet",
    "careful", "simple", "small", "large", "early", "late", "north", "south", "river", "mountain", "valley",
    "forest", "harbor", "bridge", "garden", "candle", "lantern", "compass", "anchor", "beacon", "orbit",
    "planet", "comet", "meadow", "pebble", "ember", "harvest", "thunder", "willow", "falcon", "marble",
    "copper", "silver", "amber", "cobalt", "violet", "indigo", "scarlet", "ivory",
)  # fmt: skip

_VOCABULARY_MASK = len(VOCABULARY) - 1
assert len(VOCABULARY) & _VOCABULARY_MASK == 0, "the vocabulary's size must be a power of two"

# "A short text block" before an automatic tool call, in words.
TOOL_PREAMBLE_TOKENS = 6
# How deep a tool's input schema is followed; deeper objects and arrays are left empty.
MAX_SCHEMA_DEPTH = 4
# Claude Code's shell tool, and what the `bash_write` control makes it write.
BASH_TOOL = "Bash"
BASH_WRITE_CONTENT = "written by the simulator"
# Output tokens of an answer with no content (the `empty` fault): Anthropic never reports zero.
EMPTY_OUTPUT_TOKENS = 1


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    input: JSONObject
    # The input's JSON in the pieces streamed as `input_json_delta`, one output token each.
    json_pieces: list[str]


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer: an optional text block (one piece per output token), then an optional tool call."""

    text_pieces: list[str] | None
    tool: ToolCall | None
    stop_reason: StopReason
    stop_sequence: str | None
    output_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.text_pieces or ())

    def content(self) -> list[JSONObject]:
        blocks: list[JSONObject] = []
        if self.text_pieces is not None:
            blocks.append({"type": "text", "text": self.text})
        if self.tool is not None:
            blocks.append({"type": "tool_use", "id": self.tool.id, "name": self.tool.name, "input": self.tool.input})
        return blocks


EMPTY_COMPLETION = Completion(None, None, "end_turn", None, EMPTY_OUTPUT_TOKENS)


def request_rng(seed: int, request: MessagesRequest) -> random.Random:
    """A generator that depends on the seed and on what was asked, not on how the JSON was spelled."""
    canonical = orjson.dumps(
        [request.model, request.system, request.messages, request.tools], option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.blake2b(canonical, digest_size=8, key=seed.to_bytes(16, "big", signed=True)).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311 - not for security


def generate(request: MessagesRequest, *, seed: int, wanted_tokens: int, bash_write: str | None = None) -> Completion:
    rng = request_rng(seed, request)
    continuing = request.messages[-1]["role"] == "assistant"
    bash = _bash_tool(request) if bash_write is not None else None
    tool = bash or _tool_to_call(request)
    if tool is not None:
        forced = request.tool_choice is not None and request.tool_choice["type"] in ("any", "tool")
        call = _bash_write_call(bash_write) if bash is not None and bash_write is not None else _tool_call(tool, rng)
        preamble = 0 if forced else TOOL_PREAMBLE_TOKENS
        if preamble + len(call.json_pieces) <= request.max_tokens:
            pieces = _words(rng, preamble, continuing=continuing) if preamble else None
            return Completion(pieces, call, "tool_use", None, preamble + len(call.json_pieces))
        rng = request_rng(seed, request)
    budget = min(wanted_tokens, request.max_tokens)
    pieces = _words(rng, budget, continuing=continuing)
    if request.stop_sequences:
        stopped = _cut_at_stop_sequence(pieces, request.stop_sequences)
        if stopped is not None:
            return stopped
    stop_reason: StopReason = "max_tokens" if wanted_tokens > request.max_tokens else "end_turn"
    return Completion(pieces, None, stop_reason, None, budget)


def _words(rng: random.Random, count: int, *, continuing: bool) -> list[str]:
    # One random byte per word, masked to the vocabulary's power-of-two size: several times cheaper than choices().
    words = [VOCABULARY[byte & _VOCABULARY_MASK] for byte in rng.randbytes(count)]
    pieces = [" " + word for word in words]
    if pieces and not continuing:
        pieces[0] = words[0].capitalize()
    return pieces


def _cut_at_stop_sequence(pieces: list[str], stop_sequences: list[str]) -> Completion | None:
    """The answer cut before the earliest stop sequence; its output tokens run to the end of the sequence."""
    text = "".join(pieces)
    found = [(text.find(stop), stop) for stop in stop_sequences if stop]
    hits = [(position, stop) for position, stop in found if position >= 0]
    if not hits:
        return None
    position, stop = min(hits)
    kept: list[str] = []
    consumed = 0
    end_of_stop = position + len(stop)
    tokens = 0
    for piece in pieces:
        if consumed >= end_of_stop:
            break
        tokens += 1
        if consumed < position:
            kept.append(piece[: position - consumed])
        consumed += len(piece)
    return Completion(kept, None, "stop_sequence", stop, tokens)


def _tool_to_call(request: MessagesRequest) -> JSONObject | None:
    if not request.tools:
        return None
    choice = request.tool_choice or {"type": "auto"}
    kind = choice["type"]
    if kind == "none":
        return None
    if kind == "tool":
        return next(tool for tool in request.tools if tool["name"] == choice["name"])
    text = request.last_user_text().lower()
    named = next((tool for tool in request.tools if tool["name"].lower() in text), None)
    if kind == "any":
        return named or request.tools[0]
    if request.last_user_has_tool_result():
        return None
    return named


def _bash_tool(request: MessagesRequest) -> JSONObject | None:
    if request.last_user_has_tool_result():
        return None
    return next((tool for tool in request.tools if tool["name"] == BASH_TOOL), None)


def _bash_write_call(path: str) -> ToolCall:
    command = f"printf '%s\\n' {shlex.quote(BASH_WRITE_CONTENT)} > {shlex.quote(path)}"
    return _call(BASH_TOOL, {"command": command, "description": f"Write {path}"})


def _call(name: str, tool_input: JSONObject) -> ToolCall:
    encoded = orjson.dumps(tool_input).decode()
    pieces = [encoded[start : start + CHARS_PER_TOKEN] for start in range(0, len(encoded), CHARS_PER_TOKEN)]
    return ToolCall(new_id("toolu"), name, tool_input, pieces)


def _tool_call(tool: JSONObject, rng: random.Random) -> ToolCall:
    schema = tool.get("input_schema")
    value = _value(schema, rng, 0) if isinstance(schema, dict) else {}
    return _call(tool["name"], value if isinstance(value, dict) else {})


def _value(schema: JSONObject, rng: random.Random, depth: int) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if depth >= MAX_SCHEMA_DEPTH or not isinstance(properties, dict):
            return {}
        return {name: _value(sub if isinstance(sub, dict) else {}, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        items = schema.get("items")
        if depth >= MAX_SCHEMA_DEPTH or not isinstance(items, dict):
            return []
        return [_value(items, rng, depth + 1)]
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return " ".join(rng.choices(VOCABULARY, k=2))
