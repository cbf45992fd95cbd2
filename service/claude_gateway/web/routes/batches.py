"""Message Batches (`/v1/messages/batches`), relayed to Anthropic for the key that created each batch.

- A batch belongs to the key that created it (`ownership`): another key gets Anthropic's 404 `not_found_error`
  for it, before anything reaches Anthropic, and does not see it in its list (`routes.owned` for how lists are
  filtered and paged).
- Every batch object's `results_url` points at the gateway as the client reached it, so that the SDKs'
  `batches.results()` (which follows it) fetch through the gateway, with the client's own key.
- Results are streamed through as they come (JSON Lines, never held whole), and their usage counted on the way
  (`batch_usage`): tokens by model, recorded once per batch, on its first whole download.
- Each route is authenticated and counted against the key's request limit like `/v1/messages`. Creating a batch
  reserves no tokens: its requests run at Anthropic over up to a day, under Anthropic's separate batch limits, and
  their usage is known only when the results are read, so a reservation could only be held for nothing and given
  back unsettled; the tokens are accounted when the results pass through instead (`claude_gateway_tokens_total`,
  the access log line of the download), and not charged to the key's `TOKEN_RATE_LIMIT` window, a per-minute
  budget for interactive calls. Spend budgets are where batch spending is bounded.
- A batch's creation body is streamed to Anthropic as it arrives, as a file upload is (`upload_body`): Anthropic
  takes batches of up to 256 MB, so `MAX_BODY_BYTES` does not apply; `FILES_MAX_BYTES` (501 MiB) and
  `FILES_UPLOAD_TIMEOUT_S` bound it, leaving Anthropic the judge of any real batch.
- The key's policy (`policy`) holds for a batch as for `/v1/messages`: each request's model, `max_tokens` and
  costlier features, and the `anthropic-beta` header, checked before anything reaches Anthropic (403
  `permission_error` naming the request). Only a key with a policy has its body parsed, so only its body is held
  whole, within `MAX_BODY_BYTES`; the rest of the body is Anthropic's to judge.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from claude_gateway import pricing
from claude_gateway.admission.lease import NOTHING_RESERVED
from claude_gateway.admission.policy import ALLOW_ALL, Policy, PolicyDenied
from claude_gateway.context import RequestContext
from claude_gateway.upstream.batch_usage import ResultsUsage
from claude_gateway.upstream.http_client import StreamedBody
from claude_gateway.upstream.passthrough import call, json_answer, raise_error, read_json, relayed_headers
from claude_gateway.web.routes.owned import (
    Owners,
    Relayed,
    api_path,
    gateway_base_url,
    owned_page,
    query_parameters,
    record_creator,
    relay_owned_body,
    require_owner,
    responses,
)
from claude_gateway.web.upload_body import UploadBody

BATCHES = "/v1/messages/batches"
BATCH = "/v1/messages/batches/{batch_id}"
CANCEL = "/v1/messages/batches/{batch_id}/cancel"
RESULTS = "/v1/messages/batches/{batch_id}/results"
# The requests whose bodies this module bounds itself, as it streams them (the middleware leaves them alone).
SELF_BOUNDED = frozenset({("POST", BATCHES)})

router = APIRouter(tags=["anthropic"])


def not_found(batch_id: str) -> str:
    return f"Message batch not found: {batch_id}"


def point_at_gateway(batch: dict[str, Any], base_url: str) -> dict[str, Any]:
    """`results_url` (when the results are ready) on the gateway, so that the client fetches them through it."""
    batch_id = batch.get("id")
    if batch.get("results_url") and isinstance(batch_id, str):
        batch["results_url"] = base_url + api_path(RESULTS, batch_id=batch_id)
    return batch


async def _batch_call(
    request: Request, relayed: Relayed, ownership: Owners, method: str, route: str, batch_id: str
) -> Response:
    """A call on the caller's own batch answering one batch object, relayed with its `results_url` on the gateway.
    The lease comes first: a request for another key's batch counts against the limits like any other."""
    async with relayed.lease(route, NOTHING_RESERVED):
        await require_owner(ownership, "batch", batch_id, relayed.client, not_found(batch_id))
        path = api_path(route, batch_id=batch_id)
        response = await call(relayed.upstream, method, path, route=route, client_headers=request.headers)
        if response.status >= 300:
            await raise_error(response)
        _, batch = await read_json(response)
    return json_answer(point_at_gateway(batch, gateway_base_url(request)), response)


_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["requests"],
                    "properties": {
                        "requests": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["custom_id", "params"],
                                "properties": {"custom_id": {"type": "string"}, "params": {"type": "object"}},
                            },
                        }
                    },
                }
            }
        },
    }
}
_JSON_LINES = {"application/x-jsonl": {"schema": {"type": "string"}}, "application/binary": {}}


def check_policy(body: bytes, policy: Policy, beta_header: str | None) -> None:
    """Each of the batch's requests as `/v1/messages` checks one (403 on the first refusal). A body that is not a
    batch is left for Anthropic to refuse."""
    policy.check_betas(beta_header)
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    requests = batch.get("requests") if isinstance(batch, dict) else None
    for index, item in enumerate(requests if isinstance(requests, list) else ()):
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(params, dict):
            continue
        try:
            model, max_tokens = params.get("model"), params.get("max_tokens")
            if isinstance(model, str):
                policy.check_model(model, pricing.active())
            if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
                policy.check_max_tokens(max_tokens)
            policy.check_features(params)
        except PolicyDenied as denied:
            raise PolicyDenied(f"requests.{index}.params: {denied.message}") from None


@router.post(
    BATCHES,
    summary="Create a Message Batch",
    response_class=Response,
    responses=responses("The batch"),
    openapi_extra=_CREATE_BODY,
)
async def create_batch(request: Request, relayed: Relayed, ownership: Owners) -> Response:
    settings = relayed.settings
    body: bytes | StreamedBody
    if relayed.client.policy != ALLOW_ALL:
        # The policy reads the batch: held whole, so within MAX_BODY_BYTES, and before the lease is taken.
        body = await UploadBody(request, min(settings.max_body_bytes, settings.files_max_bytes)).read()
        check_policy(body, relayed.client.policy, request.headers.get("anthropic-beta"))
    else:
        upload = UploadBody(request, settings.files_max_bytes)
        body = StreamedBody(upload.chunks(), length=upload.length)
    async with relayed.lease(BATCHES, NOTHING_RESERVED):
        response = await call(
            relayed.upstream, "POST", BATCHES, route=BATCHES, client_headers=request.headers, body=body
        )
        if response.status >= 300:
            await raise_error(response)
        _, batch = await read_json(response)
    await record_creator(ownership, "batch", batch, relayed.client)
    return json_answer(point_at_gateway(batch, gateway_base_url(request)), response)


@router.get(
    BATCHES,
    summary="List the key's Message Batches",
    response_class=Response,
    responses=responses("A page of the key's batches"),
    openapi_extra=query_parameters("limit", "after_id", "before_id"),
)
async def list_batches(request: Request, relayed: Relayed, ownership: Owners) -> Response:
    base_url = gateway_base_url(request)
    headers: dict[str, str] = {}

    async def fetch(query: str) -> dict[str, Any] | Response:
        response = await call(
            relayed.upstream, "GET", BATCHES, route=BATCHES, client_headers=request.headers, query=query
        )
        if response.status >= 300:
            await raise_error(response)
        headers.update(relayed_headers(response))
        return (await read_json(response))[1]

    async with relayed.lease(BATCHES, NOTHING_RESERVED):
        page = await owned_page(fetch, request.url.query, ownership, "batch", relayed.client, scan=True)
    if isinstance(page, Response):
        return page
    page["data"] = [point_at_gateway(batch, base_url) for batch in page["data"]]
    return Response(orjson.dumps(page), headers=headers, media_type="application/json")


@router.get(BATCH, summary="Retrieve a Message Batch", response_class=Response, responses=responses("The batch"))
async def get_batch(batch_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    return await _batch_call(request, relayed, ownership, "GET", BATCH, batch_id)


@router.post(CANCEL, summary="Cancel a Message Batch", response_class=Response, responses=responses("The batch"))
async def cancel_batch(batch_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    return await _batch_call(request, relayed, ownership, "POST", CANCEL, batch_id)


@router.delete(BATCH, summary="Delete a Message Batch", response_class=Response, responses=responses("Deleted"))
async def delete_batch(batch_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    async with relayed.lease(BATCH, NOTHING_RESERVED):
        await require_owner(ownership, "batch", batch_id, relayed.client, not_found(batch_id))
        response = await call(
            relayed.upstream, "DELETE", api_path(BATCH, batch_id=batch_id), route=BATCH, client_headers=request.headers
        )
        if response.status >= 300:
            await raise_error(response)
        raw, _ = await read_json(response)
    await ownership.forget("batch", batch_id)
    return Response(raw, headers=relayed_headers(response, body=True))


@router.get(
    RESULTS,
    summary="Stream a Message Batch's results (JSON Lines)",
    response_class=Response,
    responses=responses("The results, one JSON object a line", _JSON_LINES),
)
async def batch_results(batch_id: str, request: Request, relayed: Relayed, ownership: Owners) -> Response:
    """Streamed through as they come; their usage is read from each line as it passes, and counted (at the Batches
    price) the first time the results go through whole."""
    usage = ResultsUsage()

    async def count_usage(context: RequestContext) -> None:
        context.usage = usage.total
        if usage.by_model and await ownership.first_count(batch_id):
            usage.record(relayed.client.name)

    return await relay_owned_body(
        request,
        relayed,
        ownership,
        kind="batch",
        resource_id=batch_id,
        missing=not_found(batch_id),
        route=RESULTS,
        path=api_path(RESULTS, batch_id=batch_id),
        watcher=usage,
        on_whole=count_usage,
    )
