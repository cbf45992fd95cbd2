"""`GET /v1/models` and `GET /v1/models/{model_id}`: Anthropic's model list, showing a key only what it may use.

Authenticated and limited per key by `MODELS_RATE_LIMIT` apart from `RATE_LIMIT` (`endpoint_limits`). For a key
without a model policy both are relayed as they came, query string and pagination included. For a key with one
(`models` globs in the keys file, `policy.Policy.check_model`), a model it may not use does not exist for it:
retrieving one is Anthropic's 404 `not_found_error`, and the list leaves it out, with pagination kept honest: the
gateway reads the whole list from Anthropic (a few dozen models: one call of `UPSTREAM_PAGE_LIMIT`), keeps the allowed
ones and pages over those with Anthropic's own rules (`limit`, default 20; `after_id` pages forward, `before_id`
backward; `has_more`, `first_id`, `last_id` describe the page served), so that a page is never short while more
allowed models follow, and `has_more` is never true with nothing after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from claude_gateway import pricing
from claude_gateway.auth import ClientKey
from claude_gateway.deps import RelayCall, relay_call
from claude_gateway.errors import NotFound, UpstreamFailed
from claude_gateway.policy import PolicyDenied
from claude_gateway.relay import fetch, forwarded_headers
from claude_gateway.routes.endpoint_limits import hit_endpoint_limit
from claude_gateway.routes.messages import ERROR_RESPONSES

ENDPOINT = "models"
LIST_PATH = "/v1/models"
# Anthropic's bounds for `limit` on its list endpoints.
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
# The page size the gateway asks for when it reads the whole list for a key with a model policy (Anthropic's largest).
UPSTREAM_PAGE_LIMIT = MAX_LIMIT
# At most this many upstream pages per listing: far past any real catalogue; past it the list is served as far as it
# was read, with `has_more` true.
MAX_UPSTREAM_PAGES = 10

_MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {"type": {"const": "model"}, "id": {"type": "string"}, "display_name": {"type": "string"}},
}
_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "has_more"],
    "properties": {
        "data": {"type": "array", "items": _MODEL_SCHEMA},
        "has_more": {"type": "boolean"},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
    },
}
# Documented, not checked by the gateway: Anthropic judges them (and its refusal is relayed).
_LIST_PARAMETERS = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "after_id", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "before_id", "in": "query", "required": False, "schema": {"type": "string"}},
]


def _responses(schema: dict[str, Any], description: str) -> dict[int | str, dict[str, Any]]:
    ok = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {200: ok, **{int(status): response for status, response in ERROR_RESPONSES.items()}}


router = APIRouter(tags=["anthropic"])


@router.get(
    LIST_PATH,
    response_class=Response,
    responses=_responses(_LIST_SCHEMA, "A page of the models this key may use, newest first"),
    openapi_extra={"parameters": _LIST_PARAMETERS},
)
async def list_models(request: Request) -> Response:
    """The models this key may use, newest first, in Anthropic's list shape and pagination."""
    call = await _admitted(request)
    headers = forwarded_headers(request.headers)
    query = request.url.query
    if call.client.policy.models is None:
        raw, returned = await fetch(call.upstream, "GET", LIST_PATH, headers=headers, query=query)
        return Response(raw, media_type="application/json", headers=returned)
    page = _Page.of(request)
    if page is None:  # a query the gateway does not page over itself (a bad `limit`, both ids): Anthropic judges it
        raw, returned = await fetch(call.upstream, "GET", LIST_PATH, headers=headers, query=query)
        listing = _decoded(raw)
        served = [model for model in listing.get("data") or () if _allowed(call.client, model)]
        listing.update(_ends(served), data=served)
        return Response(orjson.dumps(listing), media_type="application/json", headers=returned)
    models, more_upstream, returned = await _read_models(call, headers, page)
    allowed = [model for model in models if _allowed(call.client, model)]
    served = allowed[-page.limit :] if page.before_id is not None else allowed[: page.limit]
    listing = {"data": served, "has_more": len(allowed) > page.limit or more_upstream, **_ends(served)}
    return Response(orjson.dumps(listing), media_type="application/json", headers=returned)


@router.get(
    LIST_PATH + "/{model_id}",
    response_class=Response,
    responses=_responses(_MODEL_SCHEMA, "The model"),
)
async def retrieve_model(request: Request, model_id: str) -> Response:
    """One model, if this key may use it (else Anthropic's 404 `not_found_error`)."""
    call = await _admitted(request)
    if not _allowed(call.client, {"id": model_id}):
        raise NotFound(f"model: {model_id}")  # Anthropic's own wording for a model it does not know
    raw, returned = await fetch(
        call.upstream, "GET", f"{LIST_PATH}/{quote(model_id, safe='')}", headers=forwarded_headers(request.headers)
    )
    return Response(raw, media_type="application/json", headers=returned)


async def _admitted(request: Request) -> RelayCall:
    call = await relay_call(request)
    await hit_endpoint_limit(call, ENDPOINT, call.settings.models_rate_limit)
    return call


def _allowed(client: ClientKey, model: Any) -> bool:
    model_id = model.get("id") if isinstance(model, dict) else None
    if not isinstance(model_id, str):
        return False
    try:
        client.policy.check_model(model_id, pricing.active())
    except PolicyDenied:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Page:
    """The page a client asked for: `limit`, and at most one of `after_id` / `before_id`."""

    limit: int
    after_id: str | None
    before_id: str | None

    @classmethod
    def of(cls, request: Request) -> _Page | None:
        params = request.query_params
        after_id, before_id = params.get("after_id"), params.get("before_id")
        text = params.get("limit")
        if after_id is not None and before_id is not None:
            return None
        if text is None:
            return cls(DEFAULT_LIMIT, after_id, before_id)
        try:
            limit = int(text)
        except ValueError:
            return None
        return cls(limit, after_id, before_id) if 1 <= limit <= MAX_LIMIT else None


async def _read_models(call: RelayCall, headers: dict[str, str], page: _Page) -> tuple[list[Any], bool, dict[str, str]]:
    """Every model on the asked-for side of `after_id` / `before_id` (the whole list without either), newest first;
    whether Anthropic had more than `MAX_UPSTREAM_PAGES` pages of them; the last answer's headers."""
    models: list[Any] = []
    cursor = ("before_id", page.before_id) if page.before_id is not None else ("after_id", page.after_id)
    returned: dict[str, str] = {}
    for _ in range(MAX_UPSTREAM_PAGES):
        query = {"limit": str(UPSTREAM_PAGE_LIMIT)}
        if cursor[1] is not None:
            query[cursor[0]] = cursor[1]
        raw, returned = await fetch(call.upstream, "GET", LIST_PATH, headers=headers, query=urlencode(query))
        listing = _decoded(raw)
        data = [model for model in listing.get("data") or () if isinstance(model, dict)]
        # Backward pages come nearer the newest each time: each goes before what was read.
        models = data + models if page.before_id is not None else models + data
        if not listing.get("has_more") or not data:
            return models, False, returned
        cursor = (cursor[0], data[0]["id"] if page.before_id is not None else data[-1]["id"])
    return models, True, returned


def _ends(served: list[Any]) -> dict[str, Any]:
    """`first_id` and `last_id` of the page served."""
    return {"first_id": served[0]["id"] if served else None, "last_id": served[-1]["id"] if served else None}


def _decoded(raw: bytes) -> dict[str, Any]:
    try:
        listing = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailed("Claude API answered the model list with something that is not JSON") from None
    if not isinstance(listing, dict):
        raise UpstreamFailed("Claude API answered the model list with something that is not a list")
    return listing
