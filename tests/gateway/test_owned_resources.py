"""What Batches and Files share, over real servers: Anthropic's unsuccessful answers relayed as they came (a scripted
upstream on a real socket), the ownership records' layout in Redis and what happens when Redis is down, the upload's
idle timeout, and the spans of the calls."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from claude_gateway.admission.keys import short_name
from claude_gateway.admission.ownership import BATCH_OWNER_TTL_S
from claude_gateway.web import upload_body
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_files import read_until_closed
from tests.support.scripted_upstream import read_request, upstream
from tests.support.servers import Process, RedisServer

BETA = "files-api-2025-04-14"
REQUESTS = [
    {
        "custom_id": "one",
        "params": {"model": "claude-sonnet-4-6", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]},
    }
]


def sdk(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


class TestUpstreamErrorsRelayed:
    @pytest.mark.parametrize(
        ("status", "reason", "error_type", "headers"),
        [
            (429, b"Too Many Requests", "rate_limit_error", (b"retry-after: 30", b"x-should-retry: true")),
            (529, b"Overloaded", "overloaded_error", (b"x-should-retry: false",)),
            (500, b"Internal Server Error", "api_error", (b"retry-after-ms: 12000",)),
        ],
    )
    async def test_status_body_and_headers_as_anthropic_sent_them(
        self,
        make_gateway: Callable[..., Gateway],
        status: int,
        reason: bytes,
        error_type: str,
        headers: tuple[bytes, ...],
    ) -> None:
        body = orjson.dumps({"type": "error", "error": {"type": error_type, "message": f"upstream says {status}"}})

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            lines = [b"HTTP/1.1 %d %s" % (status, reason), b"request-id: req_scripted_1", *headers]
            lines += [b"content-type: application/json", b"content-length: %d" % len(body)]
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            await writer.drain()

        async with upstream(handler) as scripted:
            gateway = make_gateway(anthropic_base_url=f"http://127.0.0.1:{scripted.port}")
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(f"{gateway.url}/v1/messages/batches", headers=gateway.headers())

        assert answer.status_code == status
        assert answer.content == body
        assert answer.headers["request-id"] == "req_scripted_1"
        assert answer.headers["content-type"] == "application/json"
        for header in headers:
            name, value = header.decode().split(": ")
            assert answer.headers[name] == value


class TestOwnershipInRedis:
    def test_the_key_layout(self, make_gateway: Callable[..., Gateway], redis_url: str) -> None:
        gateway = make_gateway(redis_url=redis_url)
        store = redis.Redis.from_url(redis_url)
        try:
            with sdk(gateway) as client:
                batch = client.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
                uploaded = client.beta.files.upload(file=("a.txt", b"hello", "text/plain"), betas=[BETA])
                assert store.get(f"claude-gateway:owner:batch:{batch.id}") == short_name(CLIENT_KEY).encode()
                ttl = int(store.ttl(f"claude-gateway:owner:batch:{batch.id}"))  # type: ignore[arg-type]
                assert 0 < ttl <= BATCH_OWNER_TTL_S
                assert store.get(f"claude-gateway:owner:file:{uploaded.id}") == short_name(CLIENT_KEY).encode()
                assert store.ttl(f"claude-gateway:owner:file:{uploaded.id}") == -1  # until deleted

                client.beta.files.delete(uploaded.id, betas=[BETA])
                assert store.exists(f"claude-gateway:owner:file:{uploaded.id}") == 0
        finally:
            store.close()

    def test_redis_down_fails_closed(
        self, make_gateway: Callable[..., Gateway], redis_url: str, redis_server: RedisServer
    ) -> None:
        gateway = make_gateway(redis_url=redis_url, rate_limit_fail_mode="open", redis_timeout_s=0.2)
        with sdk(gateway) as client:
            batch = client.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
            redis_server.pause()
            try:
                with pytest.raises(anthropic.APIStatusError) as refused:
                    client.messages.batches.retrieve(batch.id)
            finally:
                redis_server.resume()
            assert refused.value.status_code == 503
            assert client.messages.batches.retrieve(batch.id).id == batch.id


class TestUploadIdleTimeout:
    def test_a_body_that_stops_coming_is_a_408(
        self, make_gateway: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(upload_body, "UPLOAD_IDLE_TIMEOUT_S", 0.3)
        gateway = make_gateway()
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/files HTTP/1.1\r\nhost: gateway\r\n"
                + f"x-api-key: {CLIENT_KEY}\r\nanthropic-beta: {BETA}\r\n".encode()
                + b"content-type: multipart/form-data; boundary=b\r\ncontent-length: 1000\r\n\r\n--b\r\n"
            )
            answer = read_until_closed(sock)
        assert answer.startswith("HTTP/1.1 408")
        assert "timeout_error" in answer


class TestSpans:
    def test_each_call_has_a_child_span(self, gateway: Gateway, spans: InMemorySpanExporter) -> None:
        with sdk(gateway) as client:
            with pytest.raises(anthropic.NotFoundError):
                client.messages.batches.retrieve("msgbatch_nobodys")  # refused here: no upstream call
            client.messages.batches.list()
        deadline = time.monotonic() + 5
        while not [span for span in spans.get_finished_spans() if span.name.startswith("anthropic ")]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        calls = [span for span in spans.get_finished_spans() if span.name.startswith("anthropic ")]
        # The list's pages (more than one when other tests' batches fill the simulator); none for the refused id.
        assert {span.name for span in calls} == {"anthropic GET /v1/messages/batches"}
        attributes = dict(calls[0].attributes or {})
        assert attributes["gen_ai.provider.name"] == "anthropic"
        assert attributes["http.response.status_code"] == 200
        assert attributes["url.template"] == "/v1/messages/batches"


RESTRICTED_KEY = "cgw-restricted-batches-4d2e8a"
POLICY_KEYS_FILE = f"""
keys:
  - name: restricted
    key: {RESTRICTED_KEY}
    models: ["claude-haiku-*"]
    max_tokens: 100
    betas: ["message-batches-*"]
    features: []
"""


def sim_requests(simulator: Process) -> int:
    return int(httpx.get(f"{simulator.url}/_sim/stats", timeout=10).json()["requests"])


class TestPolicy:
    @pytest.fixture
    def restricted(self, make_gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[anthropic.Anthropic]:
        keys = tmp_path / "keys.yaml"
        keys.write_text(POLICY_KEYS_FILE)
        gateway = make_gateway(api_keys_file=str(keys))
        with anthropic.Anthropic(base_url=gateway.url, api_key=RESTRICTED_KEY, max_retries=0) as client:
            yield client

    @pytest.mark.parametrize(
        ("params", "refusal"),
        [
            ({"model": "claude-sonnet-4-6", "max_tokens": 8}, "requests.1.params: model 'claude-sonnet-4-6' is not"),
            ({"model": "claude-haiku-4-5", "max_tokens": 500}, "requests.1.params: max_tokens 500 is more than"),
            (
                {"model": "claude-haiku-4-5", "max_tokens": 8, "tools": [{"type": "web_search_20250305"}]},
                "requests.1.params: web_search is not allowed",
            ),
        ],
    )
    def test_each_request_of_a_batch_is_held_to_the_keys_policy(
        self, restricted: anthropic.Anthropic, simulator: Process, params: dict[str, Any], refusal: str
    ) -> None:
        allowed = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
        requests = [
            {"custom_id": "fine", "params": allowed},
            {"custom_id": "not", "params": {**params, "messages": [{"role": "user", "content": "Hi"}]}},
        ]
        before = sim_requests(simulator)
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            restricted.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert isinstance(denied.value.body, dict)
        assert denied.value.body["error"]["type"] == "permission_error"
        assert denied.value.body["error"]["message"].startswith(refusal)
        assert sim_requests(simulator) == before  # nothing reached Anthropic

        batch = restricted.messages.batches.create(requests=requests[:1])  # type: ignore[arg-type]
        assert batch.processing_status == "in_progress"

    def test_an_upload_needs_the_files_beta_allowed(self, restricted: anthropic.Anthropic) -> None:
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            restricted.beta.files.upload(file=("a.txt", b"hello", "text/plain"), betas=[BETA])
        assert isinstance(denied.value.body, dict)
        assert denied.value.body["error"]["message"] == f"anthropic-beta '{BETA}' is not allowed for this key"
