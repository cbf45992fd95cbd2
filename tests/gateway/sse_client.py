"""Read a gateway SSE stream the way a browser's fetch reader would: event by event, as bytes arrive."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx


def raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """httpx's `aiter_raw()` as what it is, an async generator (its annotation says iterator), so that it can be
    closed."""
    return cast(AsyncGenerator[bytes, None], response.aiter_raw())


async def data_events(response: httpx.Response) -> AsyncGenerator[Any, None]:
    """Each `data:` payload, decoded (`[DONE]` stays a string), as soon as its event is complete.

    A reader that stops before the end closes it (`contextlib.aclosing`), which closes httpx's raw iterator below
    it, while their test's loop still runs. Left to the garbage collector, they are finalised whenever a collection
    runs, possibly in another test: one CI run failed an unrelated test on "async generator already executing",
    raised there from a `Response.aiter_raw` being finalised."""
    buffer = b""
    async with contextlib.aclosing(raw_chunks(response)) as chunks:
        async for chunk in chunks:
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                for line in block.split(b"\n"):
                    if line.startswith(b"data: "):
                        payload = line[6:].decode()
                        yield payload if payload == "[DONE]" else json.loads(payload)


async def collect(response: httpx.Response) -> list[Any]:
    return [event async for event in data_events(response)]
