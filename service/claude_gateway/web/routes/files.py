"""The Files API (`/v1/files`, beta), relayed to Anthropic for the key that uploaded each file.

- A file belongs to the key that uploaded it, as a batch does (`ownership`, `routes.owned`): another key gets 404
  for it and does not see it listed.
- An upload is streamed: the multipart body goes to Anthropic as it arrives from the client (`StreamedBody`, with
  the client's `Content-Length`, or chunked), never held in memory, under a bound of its own, `FILES_MAX_BYTES`
  (the gateway's `MAX_BODY_BYTES` does not apply to it): 413 at once from a `Content-Length` over it, or as soon as
  the bytes read pass it, and the connection closed. The body must keep coming: `UPLOAD_IDLE_TIMEOUT_S` without a
  byte is a 408. Anthropic judges the body itself (its multipart shape, its `file` part).
- A download is streamed back with Anthropic's `content-type`, `content-disposition` and `content-length`.
- The client's `anthropic-beta` (`files-api-2025-04-14`) and `anthropic-version` pass through, as on every route.
  A key whose policy lists the betas it may use (`policy`) uploads only with those: its list must allow the Files
  API's (`files-api-*`).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from claude_gateway.admission.lease import NOTHING_RESERVED
from claude_gateway.upstream.http_client import StreamedBody
from claude_gateway.upstream.passthrough import call, raise_error, read_json, relayed_headers, verbatim
from claude_gateway.web.routes.owned import (
    Owners,
    Relayed,
    api_path,
    owned_page,
    query_parameters,
    record_creator,
    relay_owned_body,
    require_owner,
    responses,
)
from claude_gateway.web.upload_body import UploadBody

FILES = "/v1/files"
FILE = "/v1/files/{file_id}"
CONTENT = "/v1/files/{file_id}/content"
# The requests whose bodies this module bounds itself, as it streams them (the middleware leaves them alone).
SELF_BOUNDED = frozenset({("POST", FILES)})

router = APIRouter(tags=["anthropic"])


def not_found(file_id: str) -> str:
    return f"File not found: {file_id}"


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
_ANY_CONTENT = {"*/*": {"schema": {"type": "string", "format": "binary"}}}


@router.post(
    FILES,
    summary="Upload a File (multipart/form-data, streamed)",
    response_class=Response,
    responses=responses("The file's metadata"),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_file(request: Request, relayed: Relayed, ownership: Owners) -> Response:
    relayed.client.policy.check_betas(request.headers.get("anthropic-beta"))
    body = UploadBody(request, relayed.settings.files_max_bytes)
    async with relayed.lease(FILES, NOTHING_RESERVED):
        response = await call(
            relayed.upstream,
            "POST",
            FILES,
            route=FILES,
            client_headers=request.headers,
            body=StreamedBody(body.chunks(), length=body.length),
            content_type=request.headers.get("content-type", "application/octet-stream"),
        )
        if response.status >= 300:
            # Anthropic may answer before the body was all sent: the middleware then ends the connection.
            await raise_error(response)
        raw, metadata = await read_json(response)
    await record_creator(ownership, "file", metadata, relayed.client)
    return verbatim(raw, response)


@router.get(
    FILES,
    summary="List the key's Files",
    response_class=Response,
    responses=responses("A page of the key's files"),
    openapi_extra=query_parameters("limit", "page", "after_id", "before_id"),
)
async def list_files(request: Request, relayed: Relayed, ownership: Owners) -> Response:
    headers: dict[str, str] = {}

    async def fetch(query: str) -> dict[str, Any] | Response:
        response = await call(relayed.upstream, "GET", FILES, route=FILES, client_headers=request.headers, query=query)
        if response.status >= 300:
            await raise_error(response)
        headers.update(relayed_headers(response))
        return (await read_json(response))[1]

    async with relayed.lease(FILES, NOTHING_RESERVED):
        page = await owned_page(fetch, request.url.query, ownership, "file", relayed.client, scan=False)
    if isinstance(page, Response):
        return page
    return Response(orjson.dumps(page), headers=headers, media_type="application/json")


async def _file_call(
    request: Request, relayed: Relayed, ownership: Owners, method: str, route: str, file_id: str
) -> Response:
    """A call on the caller's own file, relayed as it came. The lease comes first: a request for another key's
    file counts against the limits like any other."""
    async with relayed.lease(route, NOTHING_RESERVED):
        await require_owner(ownership, "file", file_id, relayed.client, not_found(file_id))
        path = api_path(route, file_id=file_id)
        response = await call(relayed.upstream, method, path, route=route, client_headers=request.headers)
        if response.status >= 300:
            await raise_error(response)
        raw, _ = await read_json(response)
    return verbatim(raw, response)


@router.get(FILE, summary="Retrieve a File's metadata", response_class=Response, responses=responses("The metadata"))
async def get_file(file_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    return await _file_call(request, relayed, ownership, "GET", FILE, file_id)


@router.delete(FILE, summary="Delete a File", response_class=Response, responses=responses("Deleted"))
async def delete_file(file_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    answer = await _file_call(request, relayed, ownership, "DELETE", FILE, file_id)
    if answer.status_code < 300:
        await ownership.forget("file", file_id)
    return answer


@router.get(
    CONTENT,
    summary="Download a File's content (streamed)",
    response_class=Response,
    responses=responses("The file's bytes, with its content type", _ANY_CONTENT),
)
async def file_content(file_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    return await relay_owned_body(
        request,
        relayed,
        ownership,
        kind="file",
        resource_id=file_id,
        missing=not_found(file_id),
        route=CONTENT,
        path=api_path(CONTENT, file_id=file_id),
    )
