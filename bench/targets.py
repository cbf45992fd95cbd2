"""The requests a benchmark sends: the same question to every server, in each server's own protocol.

Every answer is the same size (`[[sim:tokens=N]]` in the text is the simulator's control for output tokens), so the
servers differ only in what they do around the upstream call. An `unpaced` target asks the simulator to answer at
once (`ttft_ms=0 tokens_per_s=0`): the same answer, with the upstream's latency out of the way.
"""

from __future__ import annotations

import json

from bench.loadgen import ANTHROPIC_SSE, CHAT_SSE, StreamFormat, Target
from bench.servers import CLIENT_KEY, UPSTREAM_KEY

HOST = "127.0.0.1"
MODEL = "claude-sonnet-4-6"
# What today's SDKs send; the gateway passes it on to Anthropic.
ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 1024
QUESTION = "Explain in a paragraph what an API gateway does for a team calling Claude."
# The simulator's controls for an answer sent at once: no time to first token, no pacing between tokens.
UNPACED = " ttft_ms=0 tokens_per_s=0"


def _text(tokens: int, tokens_per_s: float | None, unpaced: bool) -> str:
    if unpaced and tokens_per_s is not None:
        raise ValueError("an unpaced target has no tokens_per_s")
    pace = f" tokens_per_s={tokens_per_s:g}" if tokens_per_s is not None else ""
    return f"{QUESTION} [[sim:tokens={tokens}{UNPACED if unpaced else pace}]]"


def _name(base: str, *, stream: bool, unpaced: bool) -> str:
    return base + (" stream" if stream else "") + (" unpaced" if unpaced else "")


def _chat_body(text: str) -> bytes:
    return json.dumps({"message": text, "max_tokens": MAX_TOKENS}).encode()


def _messages_body(text: str, *, stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": text}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def simulator(
    port: int, tokens: int, tokens_per_s: float | None = None, *, stream: bool = False, unpaced: bool = False
) -> Target:
    return Target(
        _name("simulator /v1/messages", stream=stream, unpaced=unpaced),
        HOST,
        port,
        "/v1/messages",
        _messages_body(_text(tokens, tokens_per_s, unpaced), stream=stream),
        (("x-api-key", UPSTREAM_KEY), ("anthropic-version", ANTHROPIC_VERSION)),
    )


def gateway_messages(
    port: int, tokens: int, tokens_per_s: float | None = None, *, stream: bool = False, unpaced: bool = False
) -> Target:
    return Target(
        _name("gateway /v1/messages", stream=stream, unpaced=unpaced),
        HOST,
        port,
        "/v1/messages",
        _messages_body(_text(tokens, tokens_per_s, unpaced), stream=stream),
        (("x-api-key", CLIENT_KEY), ("anthropic-version", ANTHROPIC_VERSION)),
    )


def chat(
    server: str,
    port: int,
    tokens: int,
    tokens_per_s: float | None = None,
    *,
    stream: bool = False,
    unpaced: bool = False,
) -> Target:
    """`/chat` or `/chat/stream` of the gateway or of the reference (same body, same key header)."""
    path = "/chat/stream" if stream else "/chat"
    return Target(
        _name(f"{server} {path}", stream=False, unpaced=unpaced),
        HOST,
        port,
        path,
        _chat_body(_text(tokens, tokens_per_s, unpaced)),
        (("X-API-Key", CLIENT_KEY),),
    )


def stream_format(target: Target) -> StreamFormat:
    return CHAT_SSE if target.path.startswith("/chat") else ANTHROPIC_SSE
