"""Read a gateway SSE stream the way a browser's fetch reader would: event by event, as bytes arrive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


async def data_events(response: httpx.Response) -> AsyncIterator[Any]:
    """Each `data:` payload, decoded (`[DONE]` stays a string), as soon as its event is complete."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    payload = line[6:].decode()
                    yield payload if payload == "[DONE]" else json.loads(payload)


async def collect(response: httpx.Response) -> list[Any]:
    return [event async for event in data_events(response)]
