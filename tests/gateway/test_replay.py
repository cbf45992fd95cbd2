"""Recorded Anthropic streams (tests/fixtures/sse) replayed by a real HTTP upstream; exact gateway output checked."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.sse_client import collect
from tests.support.servers import ThreadedServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sse"
# An event type Anthropic might add tomorrow: relayed untouched on /v1/messages, ignored by /chat/stream.
FUTURE_EVENT = b'event: content_block_annotation\ndata: {"type":"content_block_annotation","index":0,"note":"new"}\n\n'


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def with_future_event(raw: bytes) -> bytes:
    head, _, tail = raw.rpartition(b"event: message_stop")
    return head + FUTURE_EVENT + b"event: message_stop" + tail


class Replay:
    """An upstream that answers every POST with the same recorded stream, in chunks of `chunk` bytes."""

    def __init__(self, body: bytes, chunk: int) -> None:
        self.body = body
        self.chunk = chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/event-stream"), (b"request-id", b"req_replay")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(self.body), self.chunk):
            await send({"type": "http.response.body", "body": self.body[start : start + self.chunk], "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def replay(make_gateway: Callable[..., Gateway]) -> Iterator[Callable[[bytes, int], Gateway]]:
    servers: list[ThreadedServer] = []

    def start(body: bytes, chunk: int = 4096) -> Gateway:
        server = ThreadedServer(Replay(body, chunk))
        server.start()
        servers.append(server)
        return make_gateway(anthropic_base_url=server.url)

    yield start
    for server in servers:
        server.stop()


def text_deltas(raw: bytes) -> list[str]:
    texts = []
    for line in raw.splitlines():
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
            if data.get("type") == "content_block_delta" and data["delta"].get("type") == "text_delta":
                texts.append(data["delta"]["text"])
    return texts


STREAM_REQUEST = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


class TestVerbatimRelay:
    @pytest.mark.parametrize("chunk", [1, 7, 4096])
    async def test_messages_stream_is_relayed_byte_for_byte(
        self, replay: Callable[[bytes, int], Gateway], chunk: int
    ) -> None:
        recorded = with_future_event(fixture("basic.txt"))
        gateway = replay(recorded, chunk)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            async with http.stream("POST", "/v1/messages", json=STREAM_REQUEST) as response:
                relayed = b"".join([part async for part in response.aiter_raw()])
        assert relayed == recorded
        assert response.headers["request-id"] == "req_replay"

    async def test_tool_use_stream_is_relayed_byte_for_byte(self, replay: Callable[[bytes, int], Gateway]) -> None:
        recorded = fixture("tool_use.txt")
        gateway = replay(recorded, 64)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            async with http.stream("POST", "/v1/messages", json=STREAM_REQUEST) as response:
                relayed = b"".join([part async for part in response.aiter_raw()])
        assert relayed == recorded


class TestChatStreamTranslation:
    @pytest.mark.parametrize("chunk", [1, 13, 4096])
    async def test_exact_event_sequence(self, replay: Callable[[bytes, int], Gateway], chunk: int) -> None:
        recorded = with_future_event(fixture("basic.txt"))
        gateway = replay(recorded.replace(b"\n", b"\r\n") if chunk == 13 else recorded, chunk)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            async with http.stream("POST", "/chat/stream", json={"message": "hi"}) as response:
                events = await collect(response)
        expected_texts = [{"text": text} for text in text_deltas(recorded)]
        final = json.loads(recorded.split(b"event: message_delta\ndata: ")[1].split(b"\n")[0])
        start = json.loads(recorded.split(b"event: message_start\ndata: ")[1].split(b"\n")[0])
        assert events == [
            *expected_texts,
            {
                "done": True,
                "usage": {
                    "input": start["message"]["usage"]["input_tokens"],
                    "output": final["usage"]["output_tokens"],
                },
            },
            "[DONE]",
        ]

    async def test_midstream_error_event(self, replay: Callable[[bytes, int], Gateway]) -> None:
        recorded = fixture("error_midstream.txt")
        gateway = replay(recorded, 4096)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            async with http.stream("POST", "/chat/stream", json={"message": "hi"}) as response:
                events = await collect(response)
        assert events == [
            *({"text": text} for text in text_deltas(recorded)),
            {"error": {"type": "overloaded_error", "message": "Claude is overloaded. Try again."}},
            "[DONE]",
        ]

    async def test_tool_use_stream_sends_only_text(self, replay: Callable[[bytes, int], Gateway]) -> None:
        recorded = fixture("tool_use.txt")
        gateway = replay(recorded, 4096)
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            async with http.stream("POST", "/chat/stream", json={"message": "hi"}) as response:
                events = await collect(response)
        assert events[:-2] == [{"text": text} for text in text_deltas(recorded)]
        assert events[-2]["done"] is True
        assert events[-1] == "[DONE]"
