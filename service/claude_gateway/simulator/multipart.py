"""A streaming `multipart/form-data` reader: parts come out as they arrive, never the whole body in memory.

Feed it the request body chunk by chunk; it yields `PartStart(name, filename, content_type)`, then `PartData`
chunks, then `PartEnd`, for each part. At most one delimiter's length of data is held back between chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from claude_gateway.simulator.errors import invalid_request

# Longest header block of one part: a part's headers are a few short lines.
MAX_PART_HEADER_BYTES = 16 * 1024

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^;\s]+)')


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data` content type; 400 when it is not one."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    match = _BOUNDARY.search(content_type)
    if media_type != "multipart/form-data" or match is None:
        raise invalid_request("Content-Type must be multipart/form-data with a boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


class MultipartReader:
    def __init__(self, boundary: bytes) -> None:
        self._first = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b""
        self._state = "preamble"

    @property
    def finished(self) -> bool:
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while True:
            if self._state == "preamble":
                at = self._buffer.find(self._first)
                if at < 0:
                    self._buffer = self._buffer[-len(self._first) :]
                    return events
                self._buffer = self._buffer[at + len(self._first) :]
                self._state = "after_delimiter"
            elif self._state == "after_delimiter":
                if len(self._buffer) < 2:
                    return events
                if self._buffer.startswith(b"--"):
                    self._state = "done"
                    self._buffer = b""
                    return events
                if not self._buffer.startswith(b"\r\n"):
                    raise invalid_request("There was an issue with the request body: malformed multipart body")
                self._buffer = self._buffer[2:]
                self._state = "headers"
            elif self._state == "headers":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_PART_HEADER_BYTES:
                        raise invalid_request("There was an issue with the request body: multipart headers too long")
                    return events
                events.append(_part_start(self._buffer[:end]))
                self._buffer = self._buffer[end + 4 :]
                self._state = "body"
            elif self._state == "body":
                at = self._buffer.find(self._delimiter)
                if at < 0:
                    # Keep what could be the start of a delimiter split across chunks.
                    safe = len(self._buffer) - len(self._delimiter) + 1
                    if safe > 0:
                        events.append(PartData(self._buffer[:safe]))
                        self._buffer = self._buffer[safe:]
                    return events
                if at:
                    events.append(PartData(self._buffer[:at]))
                events.append(PartEnd())
                self._buffer = self._buffer[at + len(self._delimiter) :]
                self._state = "after_delimiter"
            else:
                return events


def _part_start(raw: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    params: dict[str, str] = {}
    for match in _PARAM.finditer(headers.get("content-disposition", "")):
        key = match.group(1) or match.group(3)
        params[key.lower()] = match.group(2) if match.group(1) else match.group(4)
    return PartStart(params.get("name", ""), params.get("filename"), headers.get("content-type"))
