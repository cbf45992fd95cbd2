"""`POST /v1/messages`: Anthropic's Messages API, so that official SDKs and Claude Code work against the gateway
unchanged.

The gateway reads only what it acts on (`anthropic_request`: model, `max_tokens`, `stream`, what the key's policy
checks, `metadata.user_id`) and relays the body as bytes, unknown fields, roles, content block types and betas
included; `max_tokens` is bounded by the API's own maximum and the key's policy, not by `MAX_TOKENS_LIMIT` (that is
`/chat`'s). The answer comes back verbatim, streamed events included (unknown event types too), with Anthropic's
`request-id`; so do Anthropic's refusals (status, error type and message, `retry-after`, `x-should-retry`), except an
upstream 401 (see `errors`). The gateway's own refusals take Anthropic's error shape so the SDK raises its usual
exception classes. The query string plays no part in matching (Claude Code calls `/v1/messages?beta=true`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from claude_gateway import pricing
from claude_gateway.admission.lease import Reservation
from claude_gateway.telemetry import tracing
from claude_gateway.upstream.call import UpstreamCall
from claude_gateway.upstream.relay import (
    AnthropicStream,
    complete,
    forwarded_headers,
    returned_headers,
)
from claude_gateway.upstream.usage import cost_header
from claude_gateway.web.anthropic_request import MODEL_NAME_MAX_CHARS, read_messages_request
from claude_gateway.web.deps import relay_call
from claude_gateway.web.event_stream import named_event
from claude_gateway.web.models import ANTHROPIC_ERROR_SCHEMA
from claude_gateway.web.routes.plain import PlainRoute
from claude_gateway.web.streaming import after_answer, overhead_header, start_stream, stream_response

# Errors here render in Anthropic's shape: the middleware sets that for everything under /v1/.
PATH = "/v1/messages"

# Every status a `/v1/*` relay may answer with an error: the gateway's own refusals and Anthropic's, relayed (529
# is Anthropic's overloaded).
ERROR_RESPONSES: dict[str, Any] = {
    str(status): {"description": "Error", "content": {"application/json": {"schema": ANTHROPIC_ERROR_SCHEMA}}}
    for status in (400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504, 529)
}
# Documentation only (the body is relayed, and Anthropic judges it, betas widening what it accepts): enough for a
# client, or a fuzzer, to build a request Anthropic accepts.
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
        **ERROR_RESPONSES,
    },
}


async def create_message(request: Request) -> Response:
    """Create a Message (Anthropic's API), streamed when the body says `"stream": true`."""
    relayed = await relay_call(request)
    client, context = relayed.client, relayed.context
    body = await request.body()
    fields = read_messages_request(body)
    model = context.model = fields.model
    max_tokens = fields.max_tokens
    context.user_id = fields.user_id
    tracing.record_user(fields.user_id)
    headers = forwarded_headers(request.headers)
    beta_header = headers.get("anthropic-beta")
    client.policy.check_messages_request(fields.body, model, max_tokens, beta_header, pricing.active())
    cost = Reservation.of(model, len(body), max(max_tokens, 0), relayed.settings.token_reserve_output)
    upstream = relayed.upstream
    lease = relayed.lease(PATH, cost)
    # Each call is created only once the lease is held: a request refused for tokens or for want of a slot never
    # reached Anthropic, so it must not count as an upstream call (nor hold the in-flight gauge and a span open).
    if not fields.stream:
        async with lease:
            call = UpstreamCall(model=model, max_tokens=max_tokens, client=client.name, stream=False)
            completion = await complete(upstream, body, headers, call)
            lease.usage = call.usage
            settlement = lease.release_in_background()
        return Response(
            completion.raw,
            media_type="application/json",
            headers={
                **returned_headers(completion.response),
                **overhead_header(context),
                **cost_header(model, call.usage),
            },
            background=after_answer(settlement),
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
        if stream.cut_mid_event:
            yield b"\n\n"  # ends what was relayed of the cut event, so that ours is read as an event of its own
        yield named_event("error", {"type": "error", "error": {"type": error.anthropic_type, "message": error.message}})
