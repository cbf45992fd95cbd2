"""`POST /chat` and `POST /chat/stream`: the seed design's simple chat, bounded, limited and accounted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from claude_gateway import pricing, tracing
from claude_gateway.auth import ClientKey
from claude_gateway.deps import RelayCall, relay_call
from claude_gateway.errors import UpstreamFailed
from claude_gateway.lease import Reservation, overhead_header, start_stream, stream_response
from claude_gateway.models import ChatRequest, ChatResponse, ErrorDetail, bounded_chat_request
from claude_gateway.relay import NO_HEADERS, AnthropicStream, complete, forwarded_headers
from claude_gateway.routes.plain import PlainRoute, read_json_body, validate_body
from claude_gateway.settings import Settings
from claude_gateway.sse import DONE, EventStreamResponse, data_event
from claude_gateway.upstream_call import UpstreamCall
from claude_gateway.usage import cost_header

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
        if text is None:
            raise UpstreamFailed("No text in response")
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
        return Response(orjson.dumps(answer), media_type="application/json", headers=headers)

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

    return [PlainRoute("/chat", chat, methods=["POST"]), PlainRoute("/chat/stream", chat_stream, methods=["POST"])]


def openapi_router(settings: Settings, served: list[PlainRoute]) -> APIRouter:
    """The `served` routes (`build_routes`) declared as FastAPI routes, for the OpenAPI document only: FastAPI writes
    their operations (the bounded body schema, the 422, the responses) exactly as it would if it served them."""
    router = APIRouter(tags=["chat"])
    bounded = bounded_chat_request(settings.max_message_chars, settings.max_tokens_limit)
    docs = {route.path: route.endpoint.__doc__ for route in served}

    async def chat(body: ChatRequest) -> Response:
        raise NotImplementedError  # documentation only

    async def chat_stream(body: ChatRequest) -> Response:
        raise NotImplementedError  # documentation only

    for handler, path in ((chat, "/chat"), (chat_stream, "/chat/stream")):
        handler.__annotations__["body"] = bounded
        handler.__doc__ = docs[path]
    router.add_api_route("/chat", chat, methods=["POST"], response_model=ChatResponse, responses=ERROR_RESPONSES)
    router.add_api_route(
        "/chat/stream",
        chat_stream,
        methods=["POST"],
        responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
        response_class=Response,
        response_model=None,
    )
    return router


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
