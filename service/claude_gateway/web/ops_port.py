"""`/metrics` and the deep `/health` answer on `METRICS_PORT` only.

Gunicorn binds both ports and every worker serves both with the one app, so the port a request came in on
(`scope["server"]`, the connection's local address) tells them apart. On any other port these paths answer 404,
as for a route that does not exist: the public port (what an Ingress routes) shows no client names, token counts or
upstream state. `/health/live` and `/health/ready` answer on both: the kubelet probes the app port.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from claude_gateway.web.responses import JSONResponse

OPS_PATHS = frozenset({"/metrics", "/health"})


class OpsPortOnly:
    """Pure ASGI: requests for `OPS_PATHS` on a port other than `metrics_port` get a 404."""

    def __init__(self, app: ASGIApp, *, metrics_port: int) -> None:
        self.app = app
        self.metrics_port = metrics_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in OPS_PATHS and not self.on_metrics_port(scope):
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def on_metrics_port(self, scope: Scope) -> bool:
        server = scope.get("server")
        return server is not None and server[1] == self.metrics_port
