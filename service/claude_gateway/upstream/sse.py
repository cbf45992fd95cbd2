"""Reading Anthropic's server-sent events: `SSEParser` splits upstream bytes into events without copying the bytes
it relays, in time linear in the bytes, holding at most `MAX_SSE_EVENT_BYTES` of an unfinished event. (Writing ours
is `web.event_stream`.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from claude_gateway.upstream.http_client import HTTPClientError

# The most of one event the parser holds before its blank line arrives. Anthropic's events are small (deltas of a few
# dozen bytes) except those that carry a whole block: a server tool's result (a fetched web page or PDF, search
# results) in `content_block_start`, at most a few MiB. Twice the largest we expect, so that a broken or hostile
# upstream cannot make one stream hold more.
MAX_SSE_EVENT_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEEventTooLarge(HTTPClientError):
    """An event of the upstream's stream grew past `MAX_SSE_EVENT_BYTES` before it ended."""


class SSEParser:
    """Incremental parser of `event:` / `data:` blocks separated by a blank line (LF or CRLF).

    An unfinished event is kept as the list of its pieces, joined once, when its blank line arrives: each byte is
    searched and copied a bounded number of times however many chunks the event spans."""

    __slots__ = ("_carried_cr", "_pending", "_pending_bytes")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # The last chunk ended in CR: the LF that makes it a CRLF may begin the next.
        self._carried_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events `chunk` completes (a list: called once per relayed chunk, it must cost next to nothing).
        `SSEEventTooLarge` when an unfinished event grows past `MAX_SSE_EVENT_BYTES`."""
        if self._carried_cr:
            chunk = b"\r" + chunk
            self._carried_cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._carried_cr = True
            chunk = chunk.replace(b"\r\n", b"\n")
        pending = self._pending
        if pending:
            if chunk.find(b"\n\n") < 0 and not (chunk[:1] == b"\n" and pending[-1][-1:] == b"\n"):
                pending.append(chunk)
                self._pending_bytes += len(chunk)
                if self._pending_bytes > MAX_SSE_EVENT_BYTES:
                    self._too_large()
                return []
            buffer = pending[0] + chunk if len(pending) == 1 else b"".join([*pending, chunk])
            pending.clear()
            self._pending_bytes = 0
        else:
            buffer = chunk
        events = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = _parse_block(buffer[start:end])
            start = end + 2
            if event is not None:
                events.append(event)
        if start < len(buffer):
            rest = buffer[start:] if start else buffer
            pending.append(rest)
            self._pending_bytes = len(rest)
            if self._pending_bytes > MAX_SSE_EVENT_BYTES:
                self._too_large()
        return events

    @property
    def unfinished(self) -> bool:
        """Bytes of an event whose blank line has not come: a relay cut off here must end that event (`\n\n`)
        before it adds an event of its own, or the client reads the two as one."""
        return bool(self._pending)

    def _too_large(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        raise SSEEventTooLarge(f"an event of the upstream's stream is over {MAX_SSE_EVENT_BYTES} bytes")


def _parse_block(block: bytes) -> SSEEvent | None:
    # Anthropic's every event is `event: name` then one `data: json` line: read that without splitting.
    if block.startswith(b"event: "):
        newline = block.find(b"\n")
        if newline > 0 and block.startswith(b"data: ", newline + 1) and block.find(b"\n", newline + 1) < 0:
            return SSEEvent(block[7:newline].decode("utf-8", "replace"), block[newline + 7 :])
    name = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", "replace")
    if not data:
        return None
    return SSEEvent(name, b"\n".join(data))
