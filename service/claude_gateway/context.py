"""What the gateway learns about one request while serving it, read back by the middleware for logs and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from starlette.requests import Request
from starlette.types import Scope

from claude_gateway.usage import Usage

SCOPE_KEY = "claude_gateway.context"

ErrorStyle = Literal["detail", "anthropic"]


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    client: str | None = None
    model: str | None = None
    # Attribution, for the access log (never a metric label): Claude Code's `X-Claude-Code-Session-Id` and the
    # request body's `metadata.user_id`, each bounded (`anthropic_request.bounded_attribution`).
    session_id: str | None = None
    user_id: str | None = None
    usage: Usage | None = None
    # How errors render on this route: `{"detail": ...}` or Anthropic's `{"type": "error", ...}`.
    error_style: ErrorStyle = "detail"
    # Seconds spent waiting on Anthropic, subtracted from the request's time to give the gateway's overhead.
    upstream_s: float = 0.0
    # Headers every response of a limited route carries (X-RateLimit-*), set once the limits are checked.
    extra_headers: dict[str, str] = field(default_factory=dict)
    disconnected: bool = False
    # The request's USD cost, worked out once its usage is final (`costed`); None when unpriced or nothing was used.
    cost_usd: Decimal | None = None
    costed: bool = False

    def overhead_s(self, now: float | None = None) -> float:
        return max(0.0, ((now or time.perf_counter()) - self.started) - self.upstream_s)


def context_of(scope: Scope) -> RequestContext:
    context = scope.get(SCOPE_KEY)
    if context is None:  # an app built without the middleware (never in production)
        context = scope[SCOPE_KEY] = RequestContext(request_id="-")
    return context


def request_context(request: Request) -> RequestContext:
    return context_of(request.scope)
