"""`PlainRoute`: a Starlette route (an `async def handler(request) -> Response`, no FastAPI dependency solving or
body handling) that still names itself in the ASGI scope, as FastAPI's routes do, for the metrics' `route` label."""

from __future__ import annotations

from starlette.routing import Match, Route
from starlette.types import Scope


class PlainRoute(Route):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope
