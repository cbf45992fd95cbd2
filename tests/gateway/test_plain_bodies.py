"""`/chat` and `/chat/stream` read their bodies themselves (`routes.plain`), as plain routes: every body must get
the answer FastAPI would give it. The oracle is FastAPI itself, serving a route that declares the same body model,
over HTTP; the two must agree on the status and on every error's location, message and type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from claude_gateway.settings import Settings
from claude_gateway.web.models import ChatRequest, bounded_chat_request
from tests.conftest import CLIENT_KEY, Gateway
from tests.support.servers import ThreadedServer

JSON = "application/json"
# (body, content type): valid and invalid, in every way the body handling has a branch for.
BODIES: list[tuple[bytes, str | None]] = [
    (b'{"message": "hi"}', JSON),
    (b'{"message": "hi"}', "application/json; charset=utf-8"),
    (b'{"message": "hi"}', "application/vnd.api+json"),
    (b"{}", JSON),
    (b'{"message": ""}', JSON),
    (b'{"message": 1}', JSON),
    (b'{"message": "hi", "unexpected": 1}', JSON),
    (b'{"message": "hi", "max_tokens": "12"}', JSON),
    (b'{"message": "hi", "max_tokens": true}', JSON),
    (b'{"message": "hi", "max_tokens": 0}', JSON),
    (b'{"message": "hi", "max_tokens": 1000000000}', JSON),
    (b'{"message": "hi", "model": ""}', JSON),
    (b'{"message": "hi", "system_prompt": null}', JSON),
    (b'{"message": "%s"}' % (b"x" * 10_001), JSON),
    (b"[]", JSON),
    (b'"hi"', JSON),
    (b"null", JSON),
    (b'{"message": ', JSON),
    (b'{"message": "hi"} trailing', JSON),
    (b'{"message": "\xff"}', JSON),
    (b"", JSON),
    (b'{"message": "hi"}', None),
    (b'{"message": "hi"}', "text/plain"),
    (b"message=hi", "application/x-www-form-urlencoded"),
    (b"[" * 100_000, JSON),
]


@pytest.fixture(scope="module")
def oracle() -> Iterator[str]:
    """FastAPI serving the same bounded body model on both paths; it answers 200 when the body is valid."""
    bounded = bounded_chat_request(Settings().max_message_chars, Settings().max_tokens_limit)
    app = FastAPI()

    async def accept(body: ChatRequest) -> dict[str, bool]:
        return {"valid": True}

    accept.__annotations__["body"] = bounded
    for path in ("/chat", "/chat/stream"):
        app.add_api_route(path, accept, methods=["POST"])
    server = ThreadedServer(app, http="httptools")
    server.start()
    yield server.url
    server.stop()


def verdict(response: httpx.Response) -> tuple[int, Any]:
    """The status, and for a 422 each error's location, message and type (what the gateway reports of one)."""
    if response.status_code != 422:
        return response.status_code if response.status_code >= 400 else 200, None
    return 422, [{key: error[key] for key in ("loc", "msg", "type")} for error in response.json()["detail"]]


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_every_body_gets_fastapis_answer(path: str, gateway: Gateway, oracle: str) -> None:
    mismatches = []
    async with httpx.AsyncClient(timeout=30) as http:
        for body, content_type in BODIES:
            headers = {"X-API-Key": CLIENT_KEY} | ({"Content-Type": content_type} if content_type else {})
            ours = await http.post(gateway.url + path, content=body, headers=headers)
            fastapis = await http.post(oracle + path, content=body, headers=headers)
            if verdict(ours) != verdict(fastapis):
                mismatches.append((body[:60], content_type, verdict(ours), verdict(fastapis)))
    assert not mismatches, mismatches


async def test_a_body_that_is_not_json_is_refused_before_the_key_is_checked(gateway: Gateway) -> None:
    """FastAPI reads the body before it solves dependencies: broken JSON is a 422 even without a key, while a
    well-formed but invalid body without a key is a 401."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        broken = await http.post("/chat", content=b'{"message": ', headers={"Content-Type": JSON})
        invalid = await http.post("/chat", content=b"{}", headers={"Content-Type": JSON})
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"
    assert invalid.status_code == 401
