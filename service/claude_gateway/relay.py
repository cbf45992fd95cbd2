"""Calls to `POST /v1/messages` over the `UpstreamClient`, accounted in an `UpstreamCall`: the request body goes up
as bytes, the answer comes back as bytes.

No SDK object parsing runs here: `/v1/messages` relays Anthropic's bytes verbatim and `/chat/stream` reads only the
events it needs. `AnthropicStream` is a stream with a lifecycle: it watches the events go by for what accounting
needs (usage, first token, the last event) and settles its `UpstreamCall` when it ends, however it ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers

from claude_gateway import metrics, tracing
from claude_gateway.errors import GatewayError, UpstreamFailed, classify, classify_stream_error
from claude_gateway.sse import SSEEvent, SSEEventTooLarge, SSEParser
from claude_gateway.upstream_call import UpstreamCall
from claude_gateway.upstream_client import HTTPClientError, Response, UpstreamClient
from claude_gateway.usage import Usage

# Client headers passed on to Anthropic (`forwarded_headers`): the API version and beta flags change what Anthropic
# accepts and returns.
# Upstream headers passed back: the request id is what Anthropic support asks for.
RETURNED_HEADERS = ("request-id",)
NO_HEADERS: dict[str, str] = {}


def forwarded_headers(headers: Headers) -> dict[str, str]:
    """The client's `anthropic-version` and `anthropic-beta` to pass on; `anthropic-beta` sent several times is joined
    into one list, as Anthropic reads it (and as the key's policy must see it whole)."""
    forwarded = {}
    version = headers.get("anthropic-version")
    if version:
        forwarded["anthropic-version"] = version
    betas = headers.getlist("anthropic-beta")
    if betas:
        forwarded["anthropic-beta"] = ",".join(betas)
    return forwarded


def returned_headers(response: Response) -> dict[str, str]:
    return {name: value for name in RETURNED_HEADERS if (value := response.headers.get(name))}


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole (non-streamed) answer: Anthropic's bytes as they came, and the decoded Message."""

    response: Response
    raw: bytes
    message: dict[str, Any]

    def text(self) -> str | None:
        """The first text block's text, as the seed design reads it."""
        for block in self.message.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "text":
                return str(block.get("text", ""))
        return None


async def complete(
    upstream: UpstreamClient,
    body: bytes,
    headers: Mapping[str, str],
    call: UpstreamCall,
    *,
    retries: int | None = None,
) -> Completion:
    """A non-streamed call, accounted in `call`: one JSON decode of the answer, none of the SDK's object parsing.

    `retries`: the client's retries in place (`UPSTREAM_MAX_RETRIES` by default; a job, which retries by running
    again, passes 0)."""
    with call, call.context():
        response = await upstream.post_message(body, headers, retries=retries)
        try:
            raw = await response.read()
        except (TimeoutError, HTTPClientError) as exc:
            raise classify(exc) from exc  # the cause tells the retry policy that no whole answer came
        finally:
            response.release()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamFailed() from None
        if not isinstance(message, dict):
            raise UpstreamFailed()
        completion = Completion(response, raw, message)
        call.finish(
            Usage.from_wire(message.get("usage")),
            response_id=message.get("id"),
            finish_reason=message.get("stop_reason"),
            response_model=message.get("model"),
            output_text=completion.text() if tracing.capturing_content() else None,
        )
    return completion


async def fetch(
    upstream: UpstreamClient,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] = NO_HEADERS,
    query: str = "",
) -> tuple[bytes, dict[str, str]]:
    """A whole answer of one of Anthropic's other endpoints (count_tokens, models): its bytes as they came, and the
    headers to return with them. An unsuccessful answer raises its `GatewayError` (which `/v1/*` relays)."""
    response = await upstream.request(method, path, body=body, headers=headers, query=query)
    try:
        raw = await response.read()
    except (TimeoutError, HTTPClientError) as exc:
        raise classify(exc) from exc
    finally:
        response.release()
    return raw, returned_headers(response)


async def open_stream(
    upstream: UpstreamClient, body: bytes, headers: Mapping[str, str], call: UpstreamCall
) -> Response:
    """Start a streamed call; a failure before the first byte ends `call` and raises a `GatewayError`."""
    try:
        with call.context():
            return await upstream.post_message(body, headers)
    except BaseException as exc:
        call.abort(exc)
        raise


class AnthropicStream:
    """Anthropic's SSE answer, chunk by chunk, with the call's accounting kept as it goes."""

    def __init__(self, response: Response, call: UpstreamCall, request_started: float) -> None:
        self.response = response
        self.call = call
        self.request_started = request_started
        self.message_id: str | None = None
        self.stop_reason: str | None = None
        self.completed = False
        self.error: GatewayError | None = None
        # True when the error came in Anthropic's own `error` event (already relayed), not from the connection.
        self.error_from_event = False
        # True when the stream broke off inside an event: what was relayed of it needs its blank line before any
        # event of the gateway's own, or the client reads the two as one broken event.
        self.cut_mid_event = False
        # Deltas relayed: the output spent so far when a stream ends before Anthropic's final usage arrives.
        self.deltas = 0
        # The answer's text, kept only when an operator has turned on content capture for spans.
        self.text: list[str] | None = [] if tracing.capturing_content() else None

    @property
    def usage(self) -> Usage:
        return self.call.usage

    async def chunks(self) -> AsyncIterator[tuple[bytes, list[SSEEvent]]]:
        """Each chunk as it arrived, with the whole events it completed."""
        parser = SSEParser()
        try:
            async for chunk in self.response.chunks():
                events = parser.feed(chunk)
                for event in events:
                    self._observe(event)
                yield chunk, events
        except (TimeoutError, HTTPClientError) as exc:
            self.error = classify(exc)
            # An event too large to hold was dropped by the parser, but its first bytes went out.
            self.cut_mid_event = parser.unfinished or isinstance(exc, SSEEventTooLarge)
            return
        if not self.completed and self.error is None:
            self.error = UpstreamFailed("Claude API stream ended early")
            self.cut_mid_event = parser.unfinished

    def _observe(self, event: SSEEvent) -> None:
        kind = event.event
        if kind == "content_block_delta":
            self.deltas += 1
            if self.deltas == 1:
                self.call.first_token(self.request_started)
            if self.text is not None:
                self.text.append((event.json().get("delta") or {}).get("text") or "")
        elif kind == "message_start":
            message: dict[str, Any] = event.json().get("message") or {}
            self.message_id = message.get("id")
            self.call.seen(Usage.from_wire(message.get("usage")))
        elif kind == "message_delta":
            data = event.json()
            self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.call.seen(Usage.from_wire(data.get("usage")))
        elif kind == "message_stop":
            self.completed = True
        elif kind == "error":
            try:
                error_type = (event.json().get("error") or {}).get("type")
            except orjson.JSONDecodeError:
                error_type = None
            self.error = classify_stream_error(error_type)
            self.error_from_event = True

    def close(self, *, cancelled: bool = False) -> None:
        """Settle the call by the stream's last event, then free the connection (closing it if unread)."""
        if not self.completed:
            # Anthropic reports output usage only at the end; a stream cut short still spent at least a token
            # per delta, which is what gets recorded (and settled against the token limit).
            self.call.seen(Usage(output=self.deltas))
        if cancelled and not self.completed and self.error is None:
            self.call.cancelled()
        elif self.error is not None:
            metrics.streams(self.call.model_label, self.error.outcome).inc()
            self.call.fail(self.error, response_id=self.message_id)
        elif self.completed:
            metrics.streams(self.call.model_label, "ok").inc()
            self.call.finish(
                response_id=self.message_id,
                finish_reason=self.stop_reason,
                output_text="".join(self.text) if self.text is not None else None,
            )
        else:  # left before it ended, but not cancelled: the reader stopped early
            self.call.cancelled()
        # Back to the pool when read to the end; an unread connection is closed rather than reused.
        self.response.release()

    def elapsed(self) -> float:
        return time.perf_counter() - self.call.started
