"""What the simulator has seen, for `GET /_sim/stats`: the gateway's tests read these to prove what it sent."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Never reported: the credentials of the caller.
_SECRET_HEADERS = frozenset({b"x-api-key", b"authorization"})


@dataclass(slots=True)
class Stats:
    """Counters since start or the last reset. `streams_open` is a live gauge, so a reset leaves it alone."""

    requests: int = 0
    streams_open: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    # The client went away before `message_stop`.
    streams_cancelled: int = 0
    # Ended by a simulated fault (`midstream_overloaded`, `midstream_disconnect`).
    streams_failed: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    last_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    last_request: Any = None
    # "METHOD /path?query" of the last API request: which endpoint a client (or the gateway) called.
    last_path: str | None = None

    def reset(self) -> None:
        self.requests = self.streams_started = self.streams_completed = 0
        self.streams_cancelled = self.streams_failed = 0
        self.responses.clear()
        self.last_headers = []
        self.last_request = None
        self.last_path = None

    def snapshot(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.last_headers:
            if raw_name.lower() in _SECRET_HEADERS:
                continue
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "requests": self.requests,
            "streams_open": self.streams_open,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_cancelled": self.streams_cancelled,
            "streams_failed": self.streams_failed,
            "responses": {str(status): count for status, count in sorted(self.responses.items())},
            "last_headers": headers,
            "last_request": self.last_request,
            "last_path": self.last_path,
        }
