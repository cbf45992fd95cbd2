"""`GET /` and `HEAD /`: 200, for clients that probe the base URL before they call it (Claude Code sends `HEAD /`).

No key needed and nothing called outside, as Anthropic's own base URL answers; not in the OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
