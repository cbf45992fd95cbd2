"""The Files API through the gateway, with the official Python SDK, against the real simulator: each call's answer
compared with the same call straight to the simulator; per-key isolation (with Redis and without); downloads with
Anthropic's headers; the upload's own bound (413) on raw streamed bodies."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import CLIENT_KEY, OTHER_KEY, Gateway
from tests.support.servers import Process

BETA = "files-api-2025-04-14"
BETAS = [BETA]
CONTENT = bytes(range(256)) * 1024  # 256 KiB, every byte value
PER_FILE_FIELDS = ("id", "created_at")


@pytest.fixture(params=["in-process", "redis"])
def gateway(request: pytest.FixtureRequest, make_gateway: Callable[..., Gateway]) -> Gateway:
    if request.param == "redis":
        return make_gateway(redis_url=request.getfixturevalue("redis_url"))
    return make_gateway()


def sdk(base_url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with sdk(gateway.url, CLIENT_KEY) as sdk_client:
        yield sdk_client


@pytest.fixture
def other(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with sdk(gateway.url, OTHER_KEY) as sdk_client:
        yield sdk_client


@pytest.fixture
def direct(simulator: Process) -> Iterator[anthropic.Anthropic]:
    with sdk(simulator.url, "sk-ant-test-upstream-0d9c4b") as sdk_client:
        yield sdk_client


def comparable(metadata: Any) -> dict[str, Any]:
    data: dict[str, Any] = metadata.model_dump(mode="json")
    for name in PER_FILE_FIELDS:
        data.pop(name)
    return data


def upload(client: anthropic.Anthropic, name: str = "data.bin", content: bytes = CONTENT) -> Any:
    return client.beta.files.upload(file=(name, content, "application/octet-stream"), betas=BETAS)


class TestSameAnswersAsTheSimulator:
    def test_upload_metadata_download_list_delete(
        self, client: anthropic.Anthropic, direct: anthropic.Anthropic
    ) -> None:
        through, straight = upload(client), upload(direct)
        assert comparable(through) == comparable(straight)
        assert through.size_bytes == len(CONTENT)

        assert comparable(client.beta.files.retrieve_metadata(through.id, betas=BETAS)) == comparable(
            direct.beta.files.retrieve_metadata(straight.id, betas=BETAS)
        )
        through_download = client.beta.files.download(through.id, betas=BETAS)
        straight_download = direct.beta.files.download(straight.id, betas=BETAS)
        assert through_download.read() == straight_download.read() == CONTENT
        for header in ("content-type", "content-length"):
            assert through_download.http_response.headers[header] == straight_download.http_response.headers[header]

        listed = list(client.beta.files.list(betas=BETAS))
        assert [item.id for item in listed] == [through.id]
        assert comparable(listed[0]) == comparable(through)

        deleted = client.beta.files.delete(through.id, betas=BETAS)
        assert deleted.model_dump() == {"id": through.id, "type": "file_deleted"}
        assert direct.beta.files.delete(straight.id, betas=BETAS).type == "file_deleted"
        with pytest.raises(anthropic.NotFoundError):
            client.beta.files.retrieve_metadata(through.id, betas=BETAS)

    def test_without_the_beta_header_anthropics_refusal_comes_back(
        self, client: anthropic.Anthropic, direct: anthropic.Anthropic
    ) -> None:
        with pytest.raises(anthropic.BadRequestError) as through:
            client.beta.files.upload(file=("a.txt", b"hello", "text/plain"))
        with pytest.raises(anthropic.BadRequestError) as straight:
            direct.beta.files.upload(file=("a.txt", b"hello", "text/plain"))
        assert isinstance(through.value.body, dict)
        assert isinstance(straight.value.body, dict)
        assert through.value.body["error"] == straight.value.body["error"]
        assert BETA in through.value.body["error"]["message"]

    def test_an_empty_upload_is_anthropics_to_refuse(self, gateway: Gateway, simulator: Process) -> None:
        form = {"content-type": "multipart/form-data; boundary=xyz", "anthropic-beta": BETA}
        body = b"--xyz--\r\n"
        through = httpx.post(f"{gateway.url}/v1/files", content=body, headers=gateway.headers(**form), timeout=10)
        straight = httpx.post(
            f"{simulator.url}/v1/files",
            content=body,
            headers={"x-api-key": "sk-ant-direct", "anthropic-version": "2023-06-01", **form},
            timeout=10,
        )
        assert through.status_code == straight.status_code == 400
        assert through.json()["error"] == straight.json()["error"]


class TestIsolation:
    def test_another_key_gets_404_and_does_not_list_it(
        self, client: anthropic.Anthropic, other: anthropic.Anthropic
    ) -> None:
        mine = upload(client, "mine.bin")
        theirs = upload(other, "theirs.bin")
        for attempt in (
            lambda: other.beta.files.retrieve_metadata(mine.id, betas=BETAS),
            lambda: other.beta.files.download(mine.id, betas=BETAS),
            lambda: other.beta.files.delete(mine.id, betas=BETAS),
        ):
            with pytest.raises(anthropic.NotFoundError) as refused:
                attempt()
            assert isinstance(refused.value.body, dict)
            assert refused.value.body["error"] == {"type": "not_found_error", "message": f"File not found: {mine.id}"}
        assert [item.id for item in other.beta.files.list(betas=BETAS)] == [theirs.id]
        assert [item.id for item in client.beta.files.list(betas=BETAS)] == [mine.id]
        assert client.beta.files.download(mine.id, betas=BETAS).read() == CONTENT

    def test_listing_pages_by_anthropics_cursor(self, client: anthropic.Anthropic, other: anthropic.Anthropic) -> None:
        mine = []
        for index in range(3):
            mine.append(upload(client, f"mine-{index}.bin", b"x").id)
            upload(other, f"theirs-{index}.bin", b"y")
        assert [item.id for item in client.beta.files.list(limit=1, betas=BETAS)] == list(reversed(mine))


def read_until_closed(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received.decode()


def raw_upload(url: str, head: dict[str, str], body: Iterator[bytes]) -> httpx.Response:
    return httpx.post(f"{url}/v1/files", content=body, headers=head, timeout=30)


def multipart(size: int) -> tuple[str, Iterator[bytes]]:
    """A multipart body with a `file` part of `size` bytes, produced piece by piece."""

    def pieces() -> Iterator[bytes]:
        yield b'--b0undary\r\ncontent-disposition: form-data; name="file"; filename="big.bin"\r\n'
        yield b"content-type: application/octet-stream\r\n\r\n"
        sent = 0
        while sent < size:
            piece = b"\0" * min(64 * 1024, size - sent)
            sent += len(piece)
            yield piece
        yield b"\r\n--b0undary--\r\n"

    return "multipart/form-data; boundary=b0undary", pieces()


class TestUploadBound:
    LIMIT = 256 * 1024

    def test_a_chunked_body_past_the_bound_is_refused_while_streaming(
        self, make_gateway: Callable[..., Gateway], simulator: Process
    ) -> None:
        gateway = make_gateway(files_max_bytes=self.LIMIT)
        content_type, body = multipart(4 * self.LIMIT)
        answer = raw_upload(
            gateway.url, gateway.headers(**{"content-type": content_type, "anthropic-beta": BETA}), body
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["type"] == "request_too_large"
        assert answer.headers["connection"] == "close"

    def test_a_declared_length_past_the_bound_is_refused_before_reading(
        self, make_gateway: Callable[..., Gateway]
    ) -> None:
        gateway = make_gateway(files_max_bytes=self.LIMIT)
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/files HTTP/1.1\r\nhost: gateway\r\n"
                + f"x-api-key: {CLIENT_KEY}\r\nanthropic-beta: {BETA}\r\n".encode()
                + b"content-type: multipart/form-data; boundary=b\r\n"
                + f"content-length: {self.LIMIT + 1}\r\n\r\n".encode()
            )
            answer = read_until_closed(sock)
        assert answer.startswith("HTTP/1.1 413")
        assert "request_too_large" in answer

    def test_a_refusal_before_the_body_was_read_closes_the_connection(self, gateway: Gateway) -> None:
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/files HTTP/1.1\r\nhost: gateway\r\nx-api-key: not-a-key\r\n"
                + b"content-type: multipart/form-data; boundary=b\r\ncontent-length: 100000000\r\n\r\n--b\r\n"
            )
            answer = read_until_closed(sock)  # closed by the server, not kept reading 100 MB
        assert answer.startswith("HTTP/1.1 403")
        assert "connection: close" in answer.lower()

    def test_within_the_bound_and_past_max_body_bytes_it_passes(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(files_max_bytes=4 * 1024 * 1024, max_body_bytes=64 * 1024)
        content_type, body = multipart(1024 * 1024)
        answer = raw_upload(
            gateway.url, gateway.headers(**{"content-type": content_type, "anthropic-beta": BETA}), body
        )
        assert answer.status_code == 200
        assert answer.json()["size_bytes"] == 1024 * 1024
        assert answer.json()["filename"] == "big.bin"
