"""A request body the route streams on to Anthropic itself (a file upload, a batch's creation), rather than one the
middleware bounds and the route reads whole: bounded here in size (`BodyTooLarge`, 413) and in the wait for each
piece (`BodyTimeout`, 408). The server bounds the whole body's time (`Uploads`, `FILES_UPLOAD_TIMEOUT_S`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request

from claude_gateway.errors import InvalidRequest
from claude_gateway.web.middleware import BodyTimeout, BodyTooLarge

# Longest wait for the next piece of a streamed body: long enough for a slow link, short enough that a client that
# stopped sending does not hold a connection to Anthropic and an upstream slot.
UPLOAD_IDLE_TIMEOUT_S = 30.0


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidRequest("Content-Length: not a number of bytes")
    return int(value)


class UploadBody:
    """The client's body as it arrives, bounded in size and in the wait for each piece."""

    def __init__(self, request: Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.received = 0
        length = _declared_length(request)
        if length is not None and length > limit:
            raise BodyTooLarge()  # refused from its Content-Length: not one byte read
        self.length = length

    async def chunks(self) -> AsyncIterator[bytes]:
        stream = self.request.stream()
        while True:
            try:
                async with asyncio.timeout(UPLOAD_IDLE_TIMEOUT_S):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise BodyTimeout() from None
            self.received += len(chunk)
            if self.received > self.limit:
                raise BodyTooLarge()
            yield chunk

    async def read(self) -> bytes:
        """The whole body, for a route that must parse it (within a bound it can hold in memory)."""
        return b"".join([chunk async for chunk in self.chunks()])
