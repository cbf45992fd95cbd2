"""A batch's creation body (Anthropic takes up to 256 MB) streamed on to Anthropic as it arrives, under the upload
bound rather than `MAX_BODY_BYTES`; held whole, within `MAX_BODY_BYTES`, only for a key whose policy must read it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson

from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_owned_resources import POLICY_KEYS_FILE, RESTRICTED_KEY, sim_requests
from tests.support.scripted_upstream import answer, upstream
from tests.support.servers import Process

MAX_BODY_BYTES = 64 * 1024
FIRST_PART_DEADLINE_S = 10.0
BATCH_ID = "msgbatch_01StreamedCreation"


def batch_body(requests: int, model: str = "claude-haiku-4-5") -> bytes:
    """A batch of `requests` small requests: about 150 bytes each."""
    items = [
        {
            "custom_id": f"request-{index:06d}",
            "params": {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"Hi {index}"}]},
        }
        for index in range(requests)
    ]
    return orjson.dumps({"requests": items})


def headers(key: str = CLIENT_KEY) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}


async def test_the_body_reaches_anthropic_before_the_client_has_sent_it_all(
    make_gateway: Callable[..., Gateway],
) -> None:
    body = batch_body(4000)  # about 600 KB: past MAX_BODY_BYTES many times over
    assert len(body) > 8 * MAX_BODY_BYTES
    half = len(body) // 2
    first_part = asyncio.Event()
    received: list[bytes] = []
    batch = {"id": BATCH_ID, "type": "message_batch", "processing_status": "in_progress", "results_url": None}

    async def anthropic_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert f"content-length: {len(body)}".encode() in head.lower()
        part = await reader.readexactly(half)
        first_part.set()
        received.append(part + await reader.readexactly(len(body) - half))
        writer.write(answer(orjson.dumps(batch), b"content-type: application/json", b"request-id: req_scripted"))
        await writer.drain()

    async def client_side() -> AsyncIterator[bytes]:
        yield body[:half]
        # The gateway holds only what it was sent: Anthropic has the first half while the client holds the rest.
        await asyncio.wait_for(first_part.wait(), FIRST_PART_DEADLINE_S)
        yield body[half:]

    async with upstream(anthropic_side) as scripted:
        gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{scripted.port}", max_body_bytes=MAX_BODY_BYTES)
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"{gateway.url}/v1/messages/batches",
                headers={**headers(), "content-length": str(len(body))},
                content=client_side(),
            )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == BATCH_ID
    assert received == [body]


def test_a_batch_past_max_body_bytes_is_created_through_the_sdk(
    make_gateway: Callable[..., Gateway], simulator: Process
) -> None:
    gateway = make_gateway(max_body_bytes=MAX_BODY_BYTES)
    requests: list[Any] = orjson.loads(batch_body(2000))["requests"]
    with anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0) as client:
        batch = client.messages.batches.create(requests=requests)
        assert batch.request_counts.processing == len(requests)
        assert client.messages.batches.retrieve(batch.id).id == batch.id


def test_past_the_upload_bound_it_is_refused_and_the_connection_closed(
    make_gateway: Callable[..., Gateway], simulator: Process
) -> None:
    gateway = make_gateway(max_body_bytes=MAX_BODY_BYTES, files_max_bytes=4 * MAX_BODY_BYTES)
    before = sim_requests(simulator)

    def chunks() -> Iterator[bytes]:  # chunked: the bound is found while streaming, not from a Content-Length
        body = batch_body(4000)
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    response = httpx.post(f"{gateway.url}/v1/messages/batches", headers=headers(), content=chunks(), timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert response.headers["connection"] == "close"
    declared = httpx.post(f"{gateway.url}/v1/messages/batches", headers=headers(), content=batch_body(4000), timeout=30)
    assert declared.status_code == 413
    # What was sent of the refused streamed body reached Anthropic as one unfinished request, answered by no batch.
    assert sim_requests(simulator) - before <= 1


def test_a_key_with_a_policy_has_its_batch_held_whole_within_max_body_bytes(
    make_gateway: Callable[..., Gateway], simulator: Process, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(POLICY_KEYS_FILE)
    gateway = make_gateway(api_keys_file=str(keys), max_body_bytes=MAX_BODY_BYTES)
    before = sim_requests(simulator)
    too_big = httpx.post(
        f"{gateway.url}/v1/messages/batches", headers=headers(RESTRICTED_KEY), content=batch_body(2000), timeout=30
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "request_too_large"
    refused = httpx.post(
        f"{gateway.url}/v1/messages/batches",
        headers=headers(RESTRICTED_KEY),
        content=batch_body(3, model="claude-sonnet-4-6"),
        timeout=30,
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].startswith("requests.0.params: model 'claude-sonnet-4-6' is not")
    assert sim_requests(simulator) == before  # neither reached Anthropic
    fits = httpx.post(
        f"{gateway.url}/v1/messages/batches", headers=headers(RESTRICTED_KEY), content=batch_body(3), timeout=30
    )
    assert fits.status_code == 200, fits.text
    assert fits.json()["request_counts"]["processing"] == 3
