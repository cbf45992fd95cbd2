"""The Files API through the official SDK (with its beta), streamed both ways, and refused without the beta."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest

from .helpers import MakeSimulator, raw_http, sdk

FILES_BETA = "files-api-2025-04-14"
BETAS: list[anthropic.types.AnthropicBetaParam] = [FILES_BETA]
# Larger than any buffer on the way (uvicorn's, the multipart reader's, a download chunk): exercises streaming.
LARGE_BYTES = 8 * 1024 * 1024 + 13


class TestFiles:
    async def test_upload_retrieve_download_delete(self, client: anthropic.AsyncAnthropic) -> None:
        content = b"hello, files\n" * 100
        uploaded = await client.beta.files.upload(file=("notes.txt", content, "text/plain"), betas=BETAS)
        metadata = await client.beta.files.retrieve_metadata(uploaded.id, betas=BETAS)
        downloaded = await (await client.beta.files.download(uploaded.id, betas=BETAS)).read()
        deleted = await client.beta.files.delete(uploaded.id, betas=BETAS)

        assert uploaded.type == "file"
        assert uploaded.id.startswith("file_")
        assert (uploaded.filename, uploaded.mime_type, uploaded.size_bytes) == ("notes.txt", "text/plain", len(content))
        assert uploaded.downloadable is True
        assert metadata == uploaded
        assert downloaded == content
        assert (deleted.id, deleted.type) == (uploaded.id, "file_deleted")
        with pytest.raises(anthropic.NotFoundError):
            await client.beta.files.retrieve_metadata(uploaded.id, betas=BETAS)

    async def test_a_large_file_round_trips(self, client: anthropic.AsyncAnthropic) -> None:
        content = bytes(range(256)) * (LARGE_BYTES // 256) + b"tail" * 3 + b"\r\n--"
        uploaded = await client.beta.files.upload(file=("blob.bin", content), betas=BETAS)
        downloaded = await (await client.beta.files.download(uploaded.id, betas=BETAS)).read()

        assert uploaded.size_bytes == len(content)
        assert hashlib.sha256(downloaded).digest() == hashlib.sha256(content).digest()

    async def test_list_pages_newest_first(self, make_simulator: MakeSimulator) -> None:
        async with sdk(make_simulator().base_url) as client:
            first = await client.beta.files.upload(file=("a.txt", b"a"), betas=BETAS)
            second = await client.beta.files.upload(file=("b.txt", b"b"), betas=BETAS)
            listed = [file.id async for file in client.beta.files.list(limit=1, betas=BETAS)]

        assert listed == [second.id, first.id]

    async def test_a_body_sent_in_tiny_chunks(self, simulator_url: str) -> None:
        """Delimiters split across reads are still found."""
        boundary = "b0und4ry"
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\nline one\r\n-- not a delimiter\r\n--{boundary}--\r\n"
        ).encode()

        async def trickle() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 3):
                yield payload[start : start + 3]

        async with raw_http(simulator_url, **{"anthropic-beta": FILES_BETA}) as http:
            response = await http.post(
                "/v1/files", content=trickle(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
            )

        assert response.status_code == 200, response.text
        assert response.json()["size_bytes"] == len(b"line one\r\n-- not a delimiter")


class TestRefusals:
    async def test_the_beta_is_required(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/files")

        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert FILES_BETA in response.json()["error"]["message"]

    async def test_unknown_file_is_a_404(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.NotFoundError) as raised:
            await client.beta.files.retrieve_metadata("file_01nothing", betas=BETAS)

        assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    async def test_a_body_without_a_file_part(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/files", data={"purpose": "x"}, files={"other": ("x.txt", b"x")}, headers={"anthropic-beta": FILES_BETA}
        )

        assert response.status_code == 400
        assert response.json()["error"]["message"] == "file: Field required"

    async def test_not_multipart(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/files", json={}, headers={"anthropic-beta": FILES_BETA})

        assert response.status_code == 400
