"""Constants and helpers shared by the simulator's tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import orjson
from anthropic.types import MessageParam

from claude_gateway.simulator import BackgroundSimulator, SimulatorConfig

API_KEY = "sk-ant-simulator-test"
MODEL = "claude-sonnet-4-6"
VERSION = "2023-06-01"
# Quick but still paced, so that the pacing code runs in every test.
FAST = SimulatorConfig(ttft_ms=1.0, tokens_per_s=5000.0)
# How long a test waits for the simulator to notice something (a client leaving): the contract is "promptly".
NOTICE_TIMEOUT_S = 1.0

MakeSimulator = Callable[..., BackgroundSimulator]


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


def sdk(base_url: str, **options: Any) -> anthropic.AsyncAnthropic:
    """The real SDK, without retries unless asked: a test sees each answer as it is."""
    options.setdefault("api_key", API_KEY)
    options.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=base_url, **options)


def raw_http(base_url: str, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"x-api-key": API_KEY, "anthropic-version": VERSION, **headers},
        timeout=10.0,
    )


def body(**fields: Any) -> dict[str, Any]:
    """A valid `/v1/messages` body with the given fields changed."""
    return {"model": MODEL, "max_tokens": 256, "messages": user("Hello"), **fields}


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """`event: X\\ndata: {json}\\n\\n` blocks, strictly: anything else in the stream fails the test."""
    text = raw.decode()
    assert text.endswith("\n\n"), "a stream ends with a blank line"
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: "), block
        assert data_line.startswith("data: "), block
        name, data = event_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))
        assert data["type"] == name, block
        events.append((name, data))
    return events


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/_sim/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def wait_for_stats(http: httpx.AsyncClient, **expected: int) -> dict[str, Any]:
    """The stats once they show `expected`, polling for at most `NOTICE_TIMEOUT_S`."""
    deadline = time.monotonic() + NOTICE_TIMEOUT_S
    while True:
        current = await stats(http)
        if all(current[key] == value for key, value in expected.items()) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.01)
