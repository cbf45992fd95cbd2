"""`GatewayApp`: FastAPI, with its plain routes (`routes.plain`) served through fewer layers.

Every request through FastAPI's stack passes FastAPI's exception telemetry and body limit, the user middleware,
`ExceptionMiddleware`, an `AsyncExitStack` and the router's matching against every route before it reaches its
own; each layer keeps a frame alive for as long as the answer lasts, which for a stream is its whole life,
thousands at once. A plain route (`/v1/messages`) needs none of FastAPI's own layers (no dependencies, no uploaded
files; the body bound is `GatewayMiddleware`'s), so its method and path lead straight to it through the same user
middleware (ours, CORS) and the same `ExceptionMiddleware` with the same handlers, inside the same outer
`ServerErrorMiddleware` and OpenTelemetry middleware. Every other request takes FastAPI's stack unchanged.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from claude_gateway.routes.plain import PlainRoute

Lanes = dict[tuple[str, str], ASGIApp]


class PlainRouteApp:
    """One plain route as an ASGI app, setting the scope keys the router would (`route`, `endpoint`, ...)."""

    def __init__(self, route: Route, router: ASGIApp) -> None:
        self.route = route
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        scope["endpoint"] = self.route.endpoint
        scope["path_params"] = {}
        scope.setdefault("router", self.router)
        response = await self.route.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


class FastLanes:
    """Requests whose method and path name a lane go down it; the rest to `app` (FastAPI's stack)."""

    def __init__(self, app: ASGIApp, lanes: Lanes) -> None:
        self.app = app
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            lane = self.lanes.get((scope["method"], get_route_path(scope)))
            if lane is not None:
                await lane(scope, receive, send)
                return
        await self.app(scope, receive, send)


class GatewayApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not isinstance(stack, ServerErrorMiddleware):  # FastAPI changed its stack: take it as it is
            return stack
        stack.app = FastLanes(stack.app, self._lanes())
        return stack

    def _lanes(self) -> Lanes:
        handlers = {key: value for key, value in self.exception_handlers.items() if key not in (500, Exception)}
        lanes: Lanes = {}
        for route in self.router.routes:
            if not isinstance(route, PlainRoute):
                continue
            app: ASGIApp = ExceptionMiddleware(PlainRouteApp(route, self.router), handlers=handlers, debug=self.debug)
            for cls, args, kwargs in reversed(self.user_middleware):
                app = cls(app, *args, **kwargs)
            for method in route.methods or ():
                lanes[method, route.path] = app
        return lanes
