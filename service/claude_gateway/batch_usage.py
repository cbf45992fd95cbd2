"""A message batch's token usage, read from its results as they pass through the gateway.

A batch's results are JSON Lines, one request's result a line: `{"custom_id", "result": {"type": "succeeded",
"message": {..., "model", "usage"}}}` (or `errored`, `canceled`, `expired`, which spent nothing). `ResultsUsage`
is fed the body chunk by chunk as it is relayed and sums each succeeded message's `usage` per model; it holds no
more than the line being read. A line longer than `MAX_RESULT_LINE_BYTES` is not held: its usage goes uncounted
(and `skipped` says so).

The sums are recorded through `usage.record_usage`, the accounting of every other call, once per batch (its first
whole download; see `ownership.Ownership.first_count`). Anthropic bills batches at half the price of the same
requests made one by one: the token counts recorded are the real ones, their cost is at the price table's
`batch_discount`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from claude_gateway.usage import Usage, record_usage

# The longest line read: a message of 128k output tokens is under 2 MiB of JSON; eight times that is not a result.
MAX_RESULT_LINE_BYTES = 16 * 1024 * 1024


def add(one: Usage, other: Usage) -> Usage:
    return Usage(
        **{field.name: getattr(one, field.name) + getattr(other, field.name) for field in dataclasses.fields(Usage)}
    )


class ResultsUsage:
    __slots__ = ("_oversized", "_partial", "by_model", "lines", "skipped")

    def __init__(self) -> None:
        self.by_model: dict[str, Usage] = {}
        self.lines = 0
        self.skipped = 0
        self._partial = bytearray()
        self._oversized = False

    def feed(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if self._partial or self._oversized:
                self._partial += chunk[start:end]
                self._line(bytes(self._partial))
                self._partial.clear()
            else:
                self._line(chunk[start:end])
            start = end + 1
        if start < len(chunk):
            self._hold(chunk[start:])

    def finish(self) -> None:
        """The body ended: a last line without its newline is read too."""
        if self._partial or self._oversized:
            self._line(bytes(self._partial))
            self._partial.clear()

    @property
    def total(self) -> Usage:
        total = Usage()
        for usage in self.by_model.values():
            total = add(total, usage)
        return total

    def record(self, client: str) -> None:
        for model, usage in self.by_model.items():
            record_usage(model, client, usage, batch=True)

    def _hold(self, rest: bytes) -> None:
        if self._oversized:
            return
        if len(self._partial) + len(rest) > MAX_RESULT_LINE_BYTES:
            self._oversized = True
            self._partial.clear()
            return
        self._partial += rest

    def _line(self, line: bytes) -> None:
        if self._oversized:
            self._oversized = False
            self.skipped += 1
            return
        if not line.strip():
            return
        self.lines += 1
        try:
            entry: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.skipped += 1
            return
        result = entry.get("result") if isinstance(entry, dict) else None
        message = result.get("message") if isinstance(result, dict) and result.get("type") == "succeeded" else None
        if not isinstance(message, dict):
            return
        model = message.get("model")
        if not isinstance(model, str):
            self.skipped += 1
            return
        usage = Usage.from_wire(message.get("usage"))
        self.by_model[model] = add(self.by_model.get(model, Usage()), usage)
