"""Anthropic's list pagination: `?limit=&before_id=&after_id=` over objects newest first.

The answer is `{"data", "has_more", "first_id", "last_id"}`; the SDKs page forward with `after_id=last_id`, or
backward with `before_id=first_id` when the first call named `before_id`. The Files API's list (`cursor=True`) also
answers `next_page`, an opaque `page_...` cursor that the SDK sends back as `?page=`.
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


_PAGE_PREFIX = "page_"


def page(items: Sequence[JSONObject], query_string: bytes, *, cursor: bool = False) -> JSONObject:
    """One page of `items` (each with an `id`, newest first) as the query asks for it."""
    query = parse_qs(query_string.decode("latin-1"))
    limit = _limit(query.get("limit", [str(DEFAULT_LIMIT)])[-1])
    before_id = query.get("before_id", [None])[-1]
    after_id = query.get("after_id", [None])[-1]
    page_cursor = query.get("page", [None])[-1] if cursor else None
    if page_cursor is not None:
        if not page_cursor.startswith(_PAGE_PREFIX):
            raise invalid_request(f"page: {page_cursor!r} is not a valid page cursor")
        after_id = page_cursor.removeprefix(_PAGE_PREFIX)
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
    answer: JSONObject = {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    if cursor:
        answer["next_page"] = f"{_PAGE_PREFIX}{data[-1]['id']}" if has_more and data else None
    return answer


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
