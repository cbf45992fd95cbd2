"""The Files API's store: uploads streamed to a temporary directory, metadata in memory, contents read back in chunks.

A file of hundreds of MB passes through with one chunk in memory at a time, both ways.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from claude_gateway.simulator.errors import SimError, invalid_request
from claude_gateway.simulator.ids import new_id
from claude_gateway.simulator.multipart import MultipartReader, PartData, PartEnd, PartStart
from claude_gateway.simulator.timestamps import rfc3339

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

FILES_BETA = "files-api-2025-04-14"
# Anthropic's limit on one file.
MAX_FILE_BYTES = 500 * 1024 * 1024
# Chunk of a download: large enough for few reads, small enough that memory stays flat.
READ_CHUNK_BYTES = 256 * 1024
_DEFAULT_MIME_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    mime_type: str
    size_bytes: int
    created_at: float
    path: Path

    def metadata(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "file",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": self.size_bytes,
            "created_at": rfc3339(self.created_at),
            "downloadable": True,
        }


def not_found(file_id: str) -> SimError:
    return SimError(404, "not_found_error", f"File not found: {file_id}")


class FileStore:
    """Files by id, newest last; their bytes in a directory of their own, removed by `close()`."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="cgw-sim-files-"))
        self._files: dict[str, StoredFile] = {}

    def close(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)

    def newest_first(self) -> list[dict[str, Any]]:
        return [stored.metadata() for stored in reversed(self._files.values())]

    def get(self, file_id: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise not_found(file_id)
        return stored

    def delete(self, file_id: str) -> None:
        stored = self.get(file_id)
        del self._files[file_id]
        stored.path.unlink(missing_ok=True)

    async def upload(self, receive: Receive, boundary: bytes) -> StoredFile:
        """Read a multipart body whose `file` part is written to disk as it arrives."""
        reader = MultipartReader(boundary)
        file_id = new_id("file")
        path = self._directory / file_id
        found: PartStart | None = None
        size = 0
        async with await anyio.open_file(path, "wb") as out:
            try:
                current: PartStart | None = None
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise SimError(400, "invalid_request_error", "The client disconnected while sending the body.")
                    more = bool(message.get("more_body", False))
                    for event in reader.feed(message.get("body", b"")):
                        if isinstance(event, PartStart):
                            current = event
                            if event.name == "file" and found is None:
                                found = event
                        elif isinstance(event, PartData) and current is found and found is not None:
                            size += len(event.data)
                            if size > MAX_FILE_BYTES:
                                raise SimError(413, "request_too_large", "File exceeds the maximum allowed size.")
                            await out.write(event.data)
                        elif isinstance(event, PartEnd):
                            current = None
            except BaseException:
                await anyio.Path(path).unlink(missing_ok=True)
                raise
        if found is None or not reader.finished:
            await anyio.Path(path).unlink(missing_ok=True)
            raise invalid_request("file: Field required")
        filename = os.path.basename(found.filename or "") or "upload"
        mime_type = found.content_type or mimetypes.guess_type(filename)[0] or _DEFAULT_MIME_TYPE
        stored = StoredFile(file_id, filename, mime_type, size, time.time(), path)
        self._files[file_id] = stored
        return stored


async def read_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(READ_CHUNK_BYTES):
            yield chunk
