"""`POST /chat` and `POST /chat/stream`: the seed design's simple chat, bounded, limited and accounted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from claude_gateway import pricing
from claude_gateway.admission.keys import ClientKey
from claude_gateway.admission.lease import Reservation
from claude_gateway.errors import UpstreamFailed
from claude_gateway.settings import Settings
from claude_gateway.telemetry import tracing
from claude_gateway.upstream.call import UpstreamCall
from claude_gateway.upstream.relay import NO_HEADERS, AnthropicStream, complete, forwarded_headers
from claude_gateway.upstream.usage import cost_header
from claude_gateway.web.deps import RelayCall, relay_call
from claude_gateway.web.event_stream import DONE, EventStreamResponse, data_event
from claude_gateway.web.models import ChatRequest, ChatResponse, ErrorDetail, bounded_chat_request
from claude_gateway.web.routes.plain import Documented, PlainRoute, read_json_body, validate_body
from claude_gateway.web.streaming import after_answer, overhead_header, start_stream, stream_response

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail} for status in (400, 401, 403, 413, 429, 500, 502, 503, 504)
}


def _cost(body: ChatRequest, model: str, settings: Settings) -> Reservation:
    """What a request reserves: its input, estimated, and min(max_tokens, TOKEN_RESERVE_OUTPUT) of output."""
    chars = len(body.message) + len(body.system_prompt)
    return Reservation.of(model, chars, body.max_tokens, settings.token_reserve_output)


def check_policy(client: ClientKey, body: ChatRequest, model: str, beta_header: str | None) -> None:
    """The key's policy for what a chat request can ask for: its model, its `max_tokens` and, on the stream (which
    forwards it), the `anthropic-beta` header. 403 `{"detail": ...}` when not allowed."""
    client.policy.check_model(model, pricing.active())
    client.policy.check_max_tokens(body.max_tokens)
    client.policy.check_betas(beta_header)


def upstream_body(body: ChatRequest, model: str, *, stream: bool) -> bytes:
    """The seed design's call, as Messages API bytes."""
    return orjson.dumps(
        {
            "model": model,
            "max_tokens": body.max_tokens,
            "system": body.system_prompt,
            "messages": [{"role": "user", "content": body.message}],
            "stream": stream,
        }
    )


def build_routes(settings: Settings) -> list[PlainRoute]:
    """The two routes, plain (served by the fast lane), with this deployment's bounds on the body."""
    bounded = bounded_chat_request(settings.max_message_chars, settings.max_tokens_limit)

    async def read(request: Request) -> tuple[ChatRequest, RelayCall]:
        """The body and the caller, in FastAPI's order: JSON parsed, caller authenticated, body validated."""
        parsed = await read_json_body(request)
        relayed = await relay_call(request)
        return validate_body(parsed, bounded), relayed

    async def chat(request: Request) -> Response:
        """One answer from Claude, with its token counts."""
        body, relayed = await read(request)
        client, context = relayed.client, relayed.context
        model = context.model = body.model or relayed.settings.default_model
        check_policy(client, body, model, None)
        async with relayed.lease("/chat", _cost(body, model, relayed.settings)) as lease:
            call = UpstreamCall(model=model, max_tokens=body.max_tokens, client=client.name, stream=False)
            tracing.record_input(call.span, [{"role": "user", "content": body.message}], body.system_prompt)
            body_bytes = upstream_body(body, model, stream=False)
            completion = await complete(relayed.upstream, body_bytes, NO_HEADERS, call)
            lease.usage = call.usage
            text = completion.text()
            if text is None:  # refused here, the lease is released before the error is answered
                raise UpstreamFailed("No text in response")
            settlement = lease.release_in_background()
        message = completion.message
        usage = call.usage
        answer = {
            "text": text,
            "input_tokens": usage.input,
            "output_tokens": usage.output,
            "cache_read_input_tokens": usage.cache_read,
            "cache_creation_input_tokens": usage.cache_write,
            "model": message.get("model", model),
            "stop_reason": message.get("stop_reason"),
            "id": message.get("id", ""),
        }
        headers = {**overhead_header(context), **cost_header(model, usage)}
        return Response(
            orjson.dumps(answer), media_type="application/json", headers=headers, background=after_answer(settlement)
        )

    async def chat_stream(request: Request) -> EventStreamResponse:
        """Server-sent events: `{"text": ...}` per delta, then `{"done": true, "usage": ...}`, then `[DONE]`."""
        body, relayed = await read(request)
        client, context = relayed.client, relayed.context
        model = context.model = body.model or relayed.settings.default_model
        headers = forwarded_headers(request.headers)
        check_policy(client, body, model, headers.get("anthropic-beta"))

        def new_call() -> UpstreamCall:
            call = UpstreamCall(model=model, max_tokens=body.max_tokens, client=client.name, stream=True)
            tracing.record_input(call.span, [{"role": "user", "content": body.message}], body.system_prompt)
            return call

        lease = relayed.lease("/chat/stream", _cost(body, model, relayed.settings))
        stream = await start_stream(
            lease,
            new_call,
            relayed.upstream,
            upstream_body(body, model, stream=True),
            headers,
        )
        return stream_response(stream, lease, translate(stream))

    answer = Documented(bounded, ERROR_RESPONSES, response_model=ChatResponse, tags=("chat",))
    events = Documented(
        bounded,
        {200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
        response_class=Response,
        tags=("chat",),
    )
    return [
        PlainRoute("/chat", chat, methods=["POST"], documented=answer),
        PlainRoute("/chat/stream", chat_stream, methods=["POST"], documented=events),
    ]


async def translate(stream: AnthropicStream) -> AsyncIterator[bytes]:
    """Anthropic's events -> the gateway's `data:` events, one per text delta, each sent as it arrives."""
    async for _chunk, events in stream.chunks():
        out = [
            data_event({"text": delta.get("text", "")})
            for event in events
            if event.event == "content_block_delta"
            and (delta := event.json().get("delta") or {}).get("type") == "text_delta"
        ]
        if out:
            yield b"".join(out)
        if stream.error is not None:
            break
    if stream.error is None:
        usage = stream.usage
        yield data_event({"done": True, "usage": {"input": usage.input, "output": usage.output}}) + DONE
    else:
        error = stream.error
        yield data_event({"error": {"type": error.anthropic_type, "message": error.message}}) + DONE
