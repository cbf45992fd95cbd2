"""`PlainRoute`: a Starlette route (an `async def handler(request) -> Response`, no FastAPI dependency solving or
body handling) that still names itself in the ASGI scope, as FastAPI's routes do, for the metrics' `route` label;
and the reading of a JSON body into a model, as FastAPI would have done it.

The busiest routes are plain: FastAPI's per-request machinery (dependency solving, three exit stacks, its router)
was a large share of their CPU, and its frames stay alive for as long as a streamed answer lasts. Plain routes are
served by `fast_lane`."""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Documented:
    """How a plain route that reads a body model appears in the OpenAPI document: written by FastAPI itself from
    these (the body's bounded schema and the 422 included), as if FastAPI served the route (`documentation_routes`)."""

    body: type[BaseModel]
    responses: dict[int | str, dict[str, Any]]
    response_model: type[BaseModel] | None = None
    response_class: type[Response] = JSONResponse
    tags: tuple[str, ...] = ()


class PlainRoute(Route):
    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        methods: list[str],
        documented: Documented | None = None,
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.documented = documented

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def documentation_routes(routes: Iterable[BaseRoute]) -> list[APIRoute]:
    """The documented plain routes among `routes` as the FastAPI routes that would serve them: for the OpenAPI
    document only (never mounted), so that each route is declared once, where it is served."""
    documented: list[APIRoute] = []
    for route in routes:
        if not isinstance(route, PlainRoute) or route.documented is None:
            continue
        doc = route.documented

        async def endpoint(body: Any) -> Response:
            raise NotImplementedError  # documentation only

        endpoint.__annotations__["body"] = doc.body
        endpoint.__doc__ = route.endpoint.__doc__
        documented.append(
            APIRoute(
                route.path,
                endpoint,
                methods=sorted(route.methods or ()),
                name=route.name,
                response_model=doc.response_model,
                responses=doc.responses,
                response_class=doc.response_class,
                tags=list(doc.tags),
            )
        )
    return documented


# A body FastAPI would have read, as FastAPI reads it: the same content types taken for JSON, the same parser (so
# the same error positions), the same validation call, and the same errors, in the same order relative to
# authentication (a body that is not JSON is refused before the key is looked at; one that is JSON but invalid,
# after). `tests/gateway/test_plain_bodies.py` holds the two to the same answers.
MISSING: Any = object()


async def read_json_body(request: Request) -> Any:
    """The body decoded as FastAPI decodes a JSON body parameter's: parsed when its content type is JSON, raw bytes
    when it is something else (or absent), `MISSING` when empty."""
    raw = await request.body()
    if not raw:
        return MISSING
    content_type = request.headers.get("content-type")
    if not content_type or not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}], body=exc.doc) from None
    except (ValueError, RecursionError):  # undecodable, or nested too deep: FastAPI's "error parsing the body"
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from None


def validate_body(body: Any, model: type[M]) -> M:
    """`body` (from `read_json_body`) as an instance of `model`, or the 422 FastAPI would raise."""
    if body is MISSING:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return model.model_validate(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")
