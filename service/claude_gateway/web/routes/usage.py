"""`GET /v1/gateway/usage`: a key's tokens and USD by model, today and this month (UTC), its budgets and what is left.

Authenticated like `/v1/messages` (`X-API-Key` or `Authorization: Bearer`); errors in Anthropic's shape. A client key
sees its own usage only. An admin key (`ADMIN_API_KEYS`) sees every key's (`?all=true` says so explicitly); a client
key asking for `?all=true` gets 403 `permission_error`.

Read from the usage records the limiter's settlements write (Redis, shared by every pod; this process's memory
without Redis): what every answer, stream and job of the key used, as `claude_gateway_tokens_total` and
`claude_gateway_cost_usd_total` count it, with models under the same bounded names. `remaining_usd` is the budget
less what its counter holds now: settled spend, reservations of calls in flight, and any debt.

    {"client": "billing", "windows": {"day": {"period": "2026-12-06", "resets_at": "2026-12-07T00:00:00Z",
      "models": {"claude-haiku-4-5": {"input_tokens": 12, "output_tokens": 40, "cache_read_input_tokens": 0,
                                      "cache_creation_input_tokens": 0, "cost_usd": 0.000212, "requests": 1}},
      "total": {...same fields...}, "budget_usd": 20.0, "spent_usd": 0.000212, "remaining_usd": 19.999788},
      "month": {...}}}
    admin: {"clients": {"billing": {"windows": ...}, ...}}
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from claude_gateway.admission.budgets import NO_BUDGET, Budget
from claude_gateway.admission.keys import ClientKey, KeyStore, presented_key
from claude_gateway.admission.ratelimit import RateLimiter
from claude_gateway.admission.ratelimit.spend import (
    USAGE_FIELDS,
    CalendarWindow,
    budget_key,
    current_windows,
    from_micro_usd,
    to_micro_usd,
)
from claude_gateway.context import request_context
from claude_gateway.errors import ClientError
from claude_gateway.web.deps import authenticate
from claude_gateway.web.models import ANTHROPIC_ERROR_SCHEMA
from claude_gateway.web.responses import JSONResponse

PATH = "/v1/gateway/usage"
# Costs to a millionth of a dollar, as everywhere else (X-Gateway-Cost-USD).
USD_DECIMAL_PLACES = 6
# How the admin view names itself in logs (the request is no client's).
ADMIN_CLIENT_NAME = "admin"
# The usage hash fields under the names Anthropic's `usage` gives them.
_FIELD_NAMES = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_input_tokens",
    "cache_write": "cache_creation_input_tokens",
    "requests": "requests",
}

router = APIRouter(tags=["gateway"])

# Errors here take Anthropic's shape, as everywhere under /v1/ (the middleware decides by path).
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": "Error", "content": {"application/json": {"schema": ANTHROPIC_ERROR_SCHEMA}}}
    for status in (400, 401, 403, 422, 503)
}


class AdminKeyRequired(ClientError):
    """Every key's usage, asked for with a client key."""

    status_code = 403
    anthropic_type = "permission_error"
    default_message = "The usage of every key needs an admin key (ADMIN_API_KEYS)"


def _usd(micro: int) -> float:
    return round(float(from_micro_usd(micro)), USD_DECIMAL_PLACES)


def _model_view(counts: dict[str, int]) -> dict[str, Any]:
    view: dict[str, Any] = {name: counts.get(field, 0) for field, name in _FIELD_NAMES.items()}
    view["cost_usd"] = _usd(counts.get("cost_micro_usd", 0))
    return view


def _window_budget(budget: Budget, window: CalendarWindow) -> Decimal | None:
    return budget.day if window.name == "day" else budget.month


async def _window_view(
    limiter: RateLimiter, window: CalendarWindow, client: str, models: dict[str, dict[str, int]], budget: Budget
) -> dict[str, Any]:
    total = {field: sum(counts.get(field, 0) for counts in models.values()) for field in USAGE_FIELDS}
    view: dict[str, Any] = {
        "period": window.period,
        "resets_at": window.resets_at_text,
        "models": {model: _model_view(counts) for model, counts in sorted(models.items())},
        "total": _model_view(total),
        "spent_usd": _usd(total["cost_micro_usd"]),
        "budget_usd": None,
        "remaining_usd": None,
    }
    amount = _window_budget(budget, window)
    if amount is not None:
        held = await limiter.count(budget_key(window, client))
        view["budget_usd"] = float(amount)
        view["remaining_usd"] = _usd(max(0, to_micro_usd(amount) - held))
    return view


async def _client_view(
    limiter: RateLimiter, client: str, budget: Budget, usage: dict[CalendarWindow, dict[str, dict[str, dict[str, int]]]]
) -> dict[str, Any]:
    windows = {
        window.name: await _window_view(limiter, window, client, found.get(client, {}), budget)
        for window, found in usage.items()
    }
    return {"windows": windows}


@router.get(PATH, responses=_ERRORS)
async def usage(
    request: Request,
    all_keys: Annotated[bool, Query(alias="all", description="every key's usage (admin keys only)")] = False,
) -> JSONResponse:
    """This key's tokens and USD by model, today and this month (UTC), its budgets and what is left of them."""
    state = request.state
    keys: KeyStore = state.keys
    limiter: RateLimiter = state.limiter
    windows = current_windows()
    if keys.is_admin(presented_key(request.headers)):
        request_context(request).client = ADMIN_CLIENT_NAME
        found = await asyncio.gather(*(limiter.read_usage(window, None) for window in windows))
        usage_by_window = dict(zip(windows, found, strict=True))
        budgets = {client.name: client.budget for client in keys.clients}
        names = sorted({*budgets, *(name for window_usage in found for name in window_usage)})
        clients = {
            name: await _client_view(limiter, name, budgets.get(name, NO_BUDGET), usage_by_window) for name in names
        }
        return JSONResponse({"clients": clients})
    client: ClientKey = await authenticate(request)
    if all_keys:
        raise AdminKeyRequired()
    found = await asyncio.gather(*(limiter.read_usage(window, client.name) for window in windows))
    view = await _client_view(limiter, client.name, client.budget, dict(zip(windows, found, strict=True)))
    return JSONResponse({"client": client.name, **view})
