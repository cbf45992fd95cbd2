"""What the routes of owned resources (Message Batches, Files) share: their dependencies, the ownership check made
before any call that names an id, lists filtered to what the caller owns, and bodies relayed as streams.

Lists. Anthropic pages its lists newest first with `limit`, `after_id` / `before_id` (batches) or an opaque `page`
cursor (files), and answers `data`, `has_more`, `first_id`, `last_id` (and `next_page`). The gateway asks
Anthropic for the page the client asked for, with the client's own query (so Anthropic judges a bad `limit`), and
keeps the items the caller owns: `data` is never longer than the client's `limit`, `first_id` and `last_id` are
the first and last ids in `data` (never another key's id), and `has_more` is Anthropic's (there may be more; the
next page may hold none of the caller's). Continuing from `last_id` looks again at the other keys' objects after
it, which costs a little, never an item. A page of the id-cursor kind that kept nothing while Anthropic has more is
not answered empty (the SDK stops at an empty page): the gateway reads on, `SCAN_LIMIT` objects a page, at most
`MAX_SCAN_PAGES` pages, for the first of the caller's, and answers at most `limit` of them. A key whose next
object lies deeper than that behind other keys' gets an empty page (`has_more` true, no ids): it is bounded work
per request, not a full scan. A `page` cursor is Anthropic's own, passed through, and an empty page with a
`next_page` is what the SDK reads on from, so cursor lists are one upstream page per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import Depends, Request
from starlette.responses import Response

from claude_gateway.admission.keys import ClientKey
from claude_gateway.admission.lease import NOTHING_RESERVED
from claude_gateway.admission.ownership import Kind, Ownership, OwnershipUnavailable, owner
from claude_gateway.context import RequestContext, request_context
from claude_gateway.errors import NotFound, classify
from claude_gateway.telemetry.logs import get_logger
from claude_gateway.upstream.client import HTTPClientError
from claude_gateway.upstream.passthrough import call, raise_error, relayed_headers
from claude_gateway.web.deps import RelayCall, relay_call
from claude_gateway.web.event_stream import EventStreamResponse
from claude_gateway.web.models import ANTHROPIC_ERROR_SCHEMA

# Anthropic's default `limit` on its lists, and its largest.
DEFAULT_LIMIT = 20
SCAN_LIMIT = 1000
# At most this many further upstream pages are read for a page that kept nothing: bounded work per request.
MAX_SCAN_PAGES = 10
# An id longer than any Anthropic issues is nobody's: answered 404 without a lookup.
MAX_ID_CHARS = 256


log = get_logger("claude_gateway.web.routes.owned")


# -- OpenAPI: the routes read their bodies and queries raw (Anthropic judges them), so each documents them here.

# Every status an answer here may have: the gateway's own refusals, and Anthropic's answers relayed.
ERROR_STATUSES = (400, 401, 403, 404, 405, 408, 409, 413, 429, 500, 502, 503, 504, 529)
JSON_OBJECT: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}


def responses(description: str, content: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """The `responses` of an operation: its 200 (`content`, a JSON object by default) and every error status."""
    documented: dict[int | str, dict[str, Any]] = {
        200: {"description": description, "content": JSON_OBJECT if content is None else content}
    }
    for status in ERROR_STATUSES:
        documented[status] = {
            "description": "Error",
            "content": {"application/json": {"schema": ANTHROPIC_ERROR_SCHEMA}},
        }
    return documented


def query_parameters(*names: str) -> dict[str, Any]:
    """`openapi_extra` documenting a list's query parameters (passed to Anthropic as they are)."""
    schemas = {"limit": {"type": "integer", "minimum": 1, "maximum": SCAN_LIMIT}}
    return {
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": schemas.get(name, {"type": "string"})}
            for name in names
        ]
    }


async def get_ownership(request: Request) -> Ownership:
    return request.state.ownership  # type: ignore[no-any-return]


Owners = Annotated[Ownership, Depends(get_ownership)]
Relayed = Annotated[RelayCall, Depends(relay_call)]
# A page of Anthropic's list (its decoded JSON), or Anthropic's unsuccessful answer to relay.
Fetch = Callable[[str], Awaitable[dict[str, Any] | Response]]


def api_path(template: str, **ids: str) -> str:
    """An API path with its ids escaped: an id from a client's path never changes the path's shape."""
    return template.format(**{name: quote(value, safe="") for name, value in ids.items()})


async def require_owner(ownership: Ownership, kind: Kind, resource_id: str, client: ClientKey, missing: str) -> None:
    """404 `not_found_error` (as Anthropic answers for an id it does not know) unless `client` created it."""
    if len(resource_id) > MAX_ID_CHARS or await owner(ownership, kind, resource_id) != client.name:
        raise NotFound(missing)


async def keep_owned(items: list[Any], ownership: Ownership, kind: Kind, client: ClientKey) -> list[dict[str, Any]]:
    objects = [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
    owners = await ownership.owners(kind, [item["id"] for item in objects])
    return [item for item, found in zip(objects, owners, strict=True) if found == client.name]


def client_limit(params: Mapping[str, str]) -> int:
    try:
        return max(1, int(params.get("limit", DEFAULT_LIMIT)))
    except ValueError:
        return DEFAULT_LIMIT


def with_ids(page: dict[str, Any], data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        **page,
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


async def owned_page(
    fetch: Fetch, query: str, ownership: Ownership, kind: Kind, client: ClientKey, *, scan: bool
) -> dict[str, Any] | Response:
    """The caller's page of an Anthropic list (see the module docstring); `scan` for id-cursor lists."""
    page = await fetch(query)
    if isinstance(page, Response):
        return page
    data = await keep_owned(page.get("data") or [], ownership, kind, client)
    has_more = bool(page.get("has_more"))
    if not scan:
        return with_ids(page, data, has_more)
    pairs = parse_qsl(query, keep_blank_values=True)
    params = dict(pairs)
    limit = client_limit(params)
    backward = "before_id" in params
    others = [(name, value) for name, value in pairs if name not in ("limit", "after_id", "before_id")]
    scanned = 0
    while not data and has_more and scanned < MAX_SCAN_PAGES:
        cursor = page.get("first_id") if backward else page.get("last_id")
        if not isinstance(cursor, str):
            break
        scanned += 1
        more = [*others, ("limit", str(SCAN_LIMIT)), ("before_id" if backward else "after_id", cursor)]
        page = await fetch(urlencode(more))
        if isinstance(page, Response):
            return page
        data = await keep_owned(page.get("data") or [], ownership, kind, client)
        has_more = bool(page.get("has_more"))
        if len(data) > limit:
            # Newest first either way: going forward the newest `limit`, going back the oldest, next to the cursor.
            data = data[-limit:] if backward else data[:limit]
            has_more = True
    return with_ids(page, data, has_more)


class RelayedStream(EventStreamResponse):
    """A body relayed chunk by chunk (batch results, file contents) with the upstream's own headers, and the
    lifecycle of `EventStreamResponse`: `on_close(disconnected)` runs once however it ends, the chunks are cancelled
    as soon as the client leaves."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        on_close: Callable[[bool], Awaitable[None]],
        headers: Mapping[str, str],
        content_length: int | None,
    ) -> None:
        super().__init__(chunks, on_close=on_close)
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        if content_length is not None:
            raw.append((b"content-length", b"%d" % content_length))
        self.raw_headers = raw


class BodyWatcher(Protocol):
    """What reads a relayed body as it passes (a batch's results, for their usage)."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


async def relay_owned_body(
    request: Request,
    relayed: RelayCall,
    ownership: Ownership,
    *,
    kind: Kind,
    resource_id: str,
    missing: str,
    route: str,
    path: str,
    watcher: BodyWatcher | None = None,
    on_whole: Callable[[RequestContext], Awaitable[None]] | None = None,
) -> RelayedStream:
    """The body of the caller's own batch or file (`path`), streamed through as it comes, never held whole.

    The lease comes first (a request for another key's object counts against the limits like any other) and is held
    until the body ends; Anthropic's refusal is relayed as it came. A body cut off mid-way cuts the client's connection
    too, rather than ending it as if whole; `on_whole` runs once a body went through to its end."""
    lease = relayed.lease(route, NOTHING_RESERVED)
    await lease.acquire()
    try:
        await require_owner(ownership, kind, resource_id, relayed.client, missing)
        response = await call(relayed.upstream, "GET", path, route=route, client_headers=request.headers)
        if response.status >= 300:
            await raise_error(response)
    except BaseException:
        await lease.release()
        raise
    ended = False

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal ended
        try:
            async for chunk in response.chunks():
                if watcher is not None:
                    watcher.feed(chunk)
                yield chunk
        except (TimeoutError, HTTPClientError) as exc:
            raise classify(exc) from exc
        if watcher is not None:
            watcher.finish()
        ended = True

    async def on_close(disconnected: bool) -> None:
        response.release()
        await lease.release()
        context = request_context(request)
        context.disconnected = disconnected and not ended
        if ended and on_whole is not None:
            await on_whole(context)

    return RelayedStream(
        chunks(),
        on_close=on_close,
        headers=relayed_headers(response, body=True),
        content_length=response.content_length,
    )


async def record_creator(ownership: Ownership, kind: Kind, created: dict[str, Any], client: ClientKey) -> None:
    """Record the caller as the owner of the batch or file Anthropic just created (`created`, its object). When
    that fails the object still exists (and is paid for): the creation is still answered, since an error would have
    the SDK create it again, and the orphan is logged."""
    resource_id = created.get("id")
    if not isinstance(resource_id, str):
        return
    try:
        await ownership.record(kind, resource_id, client.name)
    except OwnershipUnavailable:
        log.error(f"{kind} created but its owner not recorded: nobody can reach it", extra={"resource_id": resource_id})


def gateway_base_url(request: Request) -> str:
    """The gateway as this client reached it: scheme and host of the request (uvicorn resolves the forwarded ones
    it trusts), with any root path."""
    return str(request.base_url).rstrip("/")
