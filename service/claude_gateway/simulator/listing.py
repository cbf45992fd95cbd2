"""Anthropic's list pagination: `?limit=&before_id=&after_id=` over objects newest first.

The answer is `{"data", "has_more", "first_id", "last_id"}`; the SDKs page forward with `after_id=last_id`, or
backward with `before_id=first_id` when the first call named `before_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from claude_gateway.simulator.errors import invalid_request

JSONObject = dict[str, Any]

# Anthropic's defaults and bounds for `limit` on every list endpoint.
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def page(items: Sequence[JSONObject], query_string: bytes) -> JSONObject:
    """One page of `items` (each with an `id`, newest first) as the query asks for it."""
    query = parse_qs(query_string.decode("latin-1"))
    limit = _limit(query.get("limit", [str(DEFAULT_LIMIT)])[-1])
    before_id = query.get("before_id", [None])[-1]
    after_id = query.get("after_id", [None])[-1]
    if before_id is not None and after_id is not None:
        raise invalid_request("Only one of before_id and after_id may be given")
    ids = [item["id"] for item in items]
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        data = list(items[start : start + limit])
        has_more = start + limit < len(items)
    elif before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(0, end - limit)
        data = list(items[start:end])
        has_more = start > 0
    else:
        data = list(items[:limit])
        has_more = limit < len(items)
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if limit < 1:
        raise invalid_request("limit: Input should be greater than or equal to 1")
    if limit > MAX_LIMIT:
        raise invalid_request(f"limit: Input should be less than or equal to {MAX_LIMIT}")
    return limit
