"""`POST /v1/messages`: Anthropic's Messages API, so that official SDKs work against the gateway unchanged.

The body is checked for what the gateway enforces (model, `max_tokens` bound, messages present) and otherwise
relayed as bytes; the answer comes back verbatim, streamed events included (unknown event types too), with
Anthropic's `request-id`. Errors take Anthropic's shape so the SDK raises its usual exception classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from claude_gateway import pricing
from claude_gateway.deps import relay_call
from claude_gateway.errors import InvalidRequest
from claude_gateway.lease import Reservation, overhead_header, start_stream, stream_response
from claude_gateway.relay import (
    AnthropicStream,
    complete,
    forwarded_headers,
    returned_headers,
)
from claude_gateway.routes.plain import PlainRoute
from claude_gateway.settings import Settings
from claude_gateway.sse import named_event
from claude_gateway.upstream_call import UpstreamCall
from claude_gateway.usage import cost_header

MODEL_NAME_MAX_CHARS = 128


# Errors here render in Anthropic's shape: the middleware sets that for everything under /v1/.
PATH = "/v1/messages"

_ERROR_SCHEMA: dict[str, Any] = {
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
# Documentation only (the body is relayed, and Anthropic judges it): enough for a client, or a fuzzer, to build a
# request Anthropic accepts.
_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["user", "assistant"]},
        "content": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["type"]}},
            ]
        },
    },
}
_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": MODEL_NAME_MAX_CHARS},
        "max_tokens": {"type": "integer", "minimum": 1},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE_SCHEMA},
        "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "stream": {"type": "boolean"},
    },
}
_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMA}}},
    "responses": {
        "200": {
            "description": "An Anthropic Message, or its event stream when `stream` is true",
            "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
        },
        **{
            str(status): {"description": "Error", "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
            for status in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
        },
    },
}


def parse_request(body: bytes, settings: Settings) -> tuple[dict[str, Any], str, int, bool]:
    """The request object with the fields the gateway enforces: (request, model, max_tokens, stream)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise InvalidRequest("Request body must be a JSON object")
    model = request.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= MODEL_NAME_MAX_CHARS:
        raise InvalidRequest("model: a model name is required")
    max_tokens = request.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens: an integer is required")
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        raise InvalidRequest(f"max_tokens: must be between 1 and {settings.max_tokens_limit}")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean")
    return request, model, max_tokens, stream


async def create_message(request: Request) -> Response:
    """Create a Message (Anthropic's API), streamed when the body says `"stream": true`."""
    relayed = await relay_call(request)
    client, context = relayed.client, relayed.context
    body = await request.body()
    parsed, model, max_tokens, streamed = parse_request(body, relayed.settings)
    context.model = model
    client.policy.check_messages_request(
        parsed, model, max_tokens, request.headers.get("anthropic-beta"), pricing.active()
    )
    cost = Reservation.of(model, len(body), max_tokens, relayed.settings.token_reserve_output)
    headers = forwarded_headers(request.headers)
    upstream = relayed.upstream
    lease = relayed.lease(PATH, cost)
    # Each call is created only once the lease is held: a request refused for tokens or for want of a slot never
    # reached Anthropic, so it must not count as an upstream call (nor hold the in-flight gauge and a span open).
    if not streamed:
        async with lease:
            call = UpstreamCall(model=model, max_tokens=max_tokens, client=client.name, stream=False)
            completion = await complete(upstream, body, headers, call)
            lease.usage = call.usage
        return Response(
            completion.raw,
            media_type="application/json",
            headers={
                **returned_headers(completion.response),
                **overhead_header(context),
                **cost_header(model, call.usage),
            },
        )

    stream = await start_stream(
        lease,
        lambda: UpstreamCall(model=model, max_tokens=max_tokens, client=client.name, stream=True),
        upstream,
        body,
        headers,
    )
    return stream_response(stream, lease, relay(stream), returned_headers(stream.response))


# A plain Starlette route, not a FastAPI one: the body is relayed as bytes, so FastAPI's dependency solving and
# body handling would be pure cost on the busiest route. Its OpenAPI operation is written out above instead.
routes = [PlainRoute(PATH, create_message, methods=["POST"])]
OPENAPI_PATHS: dict[str, Any] = {
    PATH: {
        "post": {
            "tags": ["anthropic"],
            "summary": "Create Message",
            "description": create_message.__doc__,
            "operationId": "create_message_v1_messages_post",
            **_OPENAPI,
        }
    }
}


async def relay(stream: AnthropicStream) -> AsyncIterator[bytes]:
    """Anthropic's bytes, verbatim and as they come. A transport failure mid-way becomes an in-band `error` event,
    the way Anthropic itself reports errors after a 200, so the SDK raises as it would against Anthropic."""
    async for chunk, _events in stream.chunks():
        yield chunk
    if stream.error is not None and not stream.error_from_event:
        error = stream.error
        yield named_event("error", {"type": "error", "error": {"type": error.anthropic_type, "message": error.message}})
