"""Fast lanes: the plain routes (`routes.plain`) served through fewer layers than FastAPI's stack (`app.GatewayApp`).

Every request through FastAPI's stack passes FastAPI's exception telemetry and body limit, the user middleware,
`ExceptionMiddleware`, an `AsyncExitStack` and the router's matching against every route before it reaches its
own; each layer keeps a frame alive for as long as the answer lasts, which for a stream is its whole life,
thousands at once. A plain route (`/v1/messages`) needs none of FastAPI's own layers (no dependencies, no uploaded
files; the body bound is `GatewayMiddleware`'s), so its method and path lead straight to it through the same user
middleware (ours, CORS) and the same `ExceptionMiddleware` with the same handlers, inside the same outer
`ServerErrorMiddleware` and OpenTelemetry middleware. Every other request takes FastAPI's stack unchanged.

What it earns: 38 KiB -> 29 KiB of memory per open stream (`make bench`'s memory-per-stream check, target < 32 KiB),
measured with and without the lanes; that is why it stays.

Public API only: the lanes are one more user middleware (`starlette.middleware.Middleware`, the same list
`add_middleware` fills), put outermost while `build_middleware_stack` (Starlette's public, overridable method; FastAPI
overrides it too) runs, and built from the app's public `user_middleware`, `exception_handlers` and `router.routes`.
Nothing depends on the shape of the stack Starlette or FastAPI build.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from claude_gateway.web.routes.plain import PlainRoute

Lanes = dict[tuple[str, str], ASGIApp]


def route_path(scope: Scope) -> str:
    """The path the router matches: `path` without the `root_path` prefix (ASGI puts the mount point in both)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("", "/"):
        return path[len(root_path) :]
    return path


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
            lane = self.lanes.get((scope["method"], route_path(scope)))
            if lane is not None:
                await lane(scope, receive, send)
                return
        await self.app(scope, receive, send)


def fast_lanes(app: FastAPI, middleware: list[Middleware]) -> Lanes:
    """A lane for each method of each plain route of `app`: the route inside `ExceptionMiddleware` (with the app's
    handlers) inside the `middleware` given (the app's user middleware), as FastAPI's stack has them."""
    # 500 and Exception are ServerErrorMiddleware's, outside the lanes as outside FastAPI's stack.
    handlers = {key: value for key, value in app.exception_handlers.items() if key not in (500, Exception)}
    lanes: Lanes = {}
    for route in app.router.routes:
        if not isinstance(route, PlainRoute):
            continue
        lane: ASGIApp = ExceptionMiddleware(PlainRouteApp(route, app.router), handlers=handlers, debug=app.debug)
        for cls, args, kwargs in reversed(middleware):
            lane = cls(lane, *args, **kwargs)
        for method in route.methods or ():
            lanes[method, route.path] = lane
    return lanes
