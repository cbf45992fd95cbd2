"""The gateway's access log lines, as a test captures them (`caplog` at INFO on `claude_gateway.access`).

A request's line is written just after its last byte left, and a whole answer's only after its settlement: a test
that has its answer may not have its line yet, so `access_lines` waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

ACCESS_LOGGER = "claude_gateway.access"
# Generous for a loaded machine: a line normally follows its answer within milliseconds.
LINE_DEADLINE_S = 15.0
POLL_S = 0.02


async def access_lines(caplog: pytest.LogCaptureFixture, *, count: int = 1, **fields: Any) -> list[logging.LogRecord]:
    """The access log lines whose fields equal `fields` (`path="/chat"`, `request_id=...`), once `count` of them
    are written."""
    deadline = time.monotonic() + LINE_DEADLINE_S
    while True:
        found = [
            record
            for record in caplog.records
            if record.name == ACCESS_LOGGER and all(logged(record, name) == value for name, value in fields.items())
        ]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} access log lines with {fields}")
        await asyncio.sleep(POLL_S)


def logged(record: logging.LogRecord, name: str) -> Any:
    """A field of an access log line (or any record's `extra`)."""
    return record.__dict__.get(name)
