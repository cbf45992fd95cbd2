"""Two renderers, one error: `{"detail": ...}` on the gateway's routes, Anthropic's error shape on `/v1/*`.

The style comes from the route (its router sets `RequestContext.error_style`), never from the message text.
Nothing here shows a stack trace: unexpected exceptions become a bare 500 and a log line. An upstream message is
shown on `/v1/*` only, where Anthropic's unsuccessful answers are relayed as they came (`GatewayError.relayed`).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from claude_gateway.context import ErrorStyle, request_context
from claude_gateway.errors import GatewayError
from claude_gateway.logs import get_logger

log = get_logger("claude_gateway.errors")

# A body with thousands of unknown fields would otherwise get an answer many times its own size.
MAX_REPORTED_ERRORS = 20

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(style: ErrorStyle, anthropic_type: str, message: str, request_id: str | None = None) -> bytes:
    if style == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": anthropic_type, "message": message}}
        if request_id:
            body["request_id"] = request_id
        return orjson.dumps(body)
    return orjson.dumps({"detail": message})


def render(request: Request, error: GatewayError) -> Response:
    context = request_context(request)
    relayed = error.relayed
    if relayed is not None and context.error_style == "anthropic":
        # Anthropic's own answer, as it came: its clients read its type and wording to recover (errors.py).
        return Response(
            relayed.body, status_code=relayed.status, headers=relayed.headers, media_type="application/json"
        )
    return Response(
        error_body(context.error_style, error.anthropic_type, error.message, context.request_id),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return render(request, exc)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    context = request_context(request)
    message = exc.detail if isinstance(exc.detail, str) else "Request failed"
    body = error_body(context.error_style, _HTTP_TYPES.get(exc.status_code, "api_error"), message, context.request_id)
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type="application/json")


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """422 naming each bad field; the offending input itself is not echoed back (it may be megabytes, or private)."""
    assert isinstance(exc, RequestValidationError)
    context = request_context(request)
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()[:MAX_REPORTED_ERRORS]
    ]
    if context.error_style == "anthropic":
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = ".".join(str(part) for part in first["loc"] if part != "body")
        body = error_body("anthropic", "invalid_request_error", f"{field}: {first['msg']}", context.request_id)
        return Response(body, status_code=400, media_type="application/json")
    return Response(orjson.dumps({"detail": errors}), status_code=422, media_type="application/json")


# nginx's code for "client closed request": nobody reads it, but the access log and metrics show what happened.
CLIENT_CLOSED_REQUEST = 499


async def client_disconnect_handler(request: Request, exc: Exception) -> Response:
    """The client left while its body was being read: not an error of ours, nothing to log as one."""
    context = request_context(request)
    context.disconnected = True
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    context = request_context(request)
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"request_id": context.request_id, "path": request.url.path, "client": context.client},
    )
    body = error_body(context.error_style, "api_error", "Internal error", context.request_id)
    return Response(body, status_code=500, media_type="application/json")


def install(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, gateway_error_handler)
    app.add_exception_handler(HTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(ClientDisconnect, client_disconnect_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
