"""`POST /v1/messages/count_tokens`: Anthropic's own count of a Messages request's input tokens, relayed.

Exact (Anthropic counts; the gateway never estimates), authenticated, refused for a model or beta the key's policy
does not allow, limited per key by `COUNT_TOKENS_RATE_LIMIT` apart from `RATE_LIMIT` (`endpoint_limits`), and free:
it reserves and spends nothing against token limits or budgets. The body is relayed as bytes (only `model` is read)
and the answer comes back as it came, Anthropic's refusals included. The upstream call is counted in
`claude_gateway_upstream_requests_total{model, outcome}` and traced as a `count_tokens {model}` span.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from claude_gateway import metrics, pricing, tracing
from claude_gateway.anthropic_request import metadata_user_id, read_count_tokens_request
from claude_gateway.deps import relay_call
from claude_gateway.errors import classify
from claude_gateway.lease import overhead_header
from claude_gateway.relay import fetch, forwarded_headers
from claude_gateway.routes.endpoint_limits import hit_endpoint_limit
from claude_gateway.routes.messages import ERROR_RESPONSES
from claude_gateway.routes.plain import PlainRoute

PATH = "/v1/messages/count_tokens"
ENDPOINT = "count_tokens"


async def count_tokens(request: Request) -> Response:
    """Count the input tokens of a Messages request (Anthropic's count, exact)."""
    relayed = await relay_call(request)
    client, context = relayed.client, relayed.context
    body = await request.body()
    parsed, model = read_count_tokens_request(body)
    context.model = model
    context.user_id = metadata_user_id(parsed)
    tracing.record_user(context.user_id)
    headers = forwarded_headers(request.headers)
    client.policy.check_model(model, pricing.active())
    client.policy.check_betas(headers.get("anthropic-beta"))
    await hit_endpoint_limit(relayed, ENDPOINT, relayed.settings.count_tokens_rate_limit)

    span = tracing.start_operation_span(ENDPOINT, model)
    started = time.perf_counter()
    try:
        raw, returned = await fetch(relayed.upstream, "POST", PATH, body=body, headers=headers)
    except BaseException as exc:
        if isinstance(exc, Exception):
            error = classify(exc)
            metrics.upstream_requests(metrics.model_label(model), error.outcome).inc()
            tracing.end_operation_span(span, error=error)
        else:  # the client left: not an upstream failure
            tracing.end_operation_span(span)
        raise
    finally:
        context.upstream_s = time.perf_counter() - started
    metrics.upstream_requests(metrics.model_label(model), "ok").inc()
    tracing.end_operation_span(span, input_tokens=_input_tokens(raw))
    return Response(raw, media_type="application/json", headers={**returned, **overhead_header(context)})


def _input_tokens(raw: bytes) -> int | None:
    try:
        count = orjson.loads(raw).get("input_tokens")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


# Plain, like `/v1/messages`: the body is relayed as bytes and clients call it often.
routes = [PlainRoute(PATH, count_tokens, methods=["POST"])]
OPENAPI_PATHS: dict[str, Any] = {
    PATH: {
        "post": {
            "tags": ["anthropic"],
            "summary": "Count Message Tokens",
            "description": count_tokens.__doc__,
            "operationId": "count_tokens_v1_messages_count_tokens_post",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["model", "messages"],
                            "properties": {
                                "model": {"type": "string", "minLength": 1},
                                "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The request's input tokens",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["input_tokens"],
                                "properties": {"input_tokens": {"type": "integer"}},
                            }
                        }
                    },
                },
                **ERROR_RESPONSES,
            },
        }
    }
}
