"""The Files API's store: uploads streamed to temporary files, metadata in memory, contents read back in chunks.

A file of hundreds of MB passes through with one chunk in memory at a time, both ways. Each file is unlinked as
soon as it is created and kept by its open descriptor, so nothing is left on disk however the process ends.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

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
    # An unlinked temporary file, open for reading at any offset.
    fd: int

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


def _anonymous_file() -> int:
    fd, path = tempfile.mkstemp(prefix="cgw-sim-file-")
    os.unlink(path)
    return fd


class FileStore:
    """Files by id, newest last; `close()` releases their space."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}

    def close(self) -> None:
        for stored in self._files.values():
            os.close(stored.fd)
        self._files.clear()

    def newest_first(self) -> list[dict[str, Any]]:
        return [stored.metadata() for stored in reversed(self._files.values())]

    def get(self, file_id: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise not_found(file_id)
        return stored

    def open(self, file_id: str) -> tuple[StoredFile, int]:
        """The file and a descriptor of its own for `read_chunks`, valid even if the file is deleted meanwhile."""
        stored = self.get(file_id)
        return stored, os.dup(stored.fd)

    def delete(self, file_id: str) -> None:
        stored = self.get(file_id)
        del self._files[file_id]
        # A download still reading it keeps its own duplicate of the descriptor.
        os.close(stored.fd)

    async def upload(self, receive: Receive, boundary: bytes) -> StoredFile:
        """Read a multipart body whose `file` part is written to disk as it arrives."""
        reader = MultipartReader(boundary)
        fd = _anonymous_file()
        found: PartStart | None = None
        size = 0
        try:
            with os.fdopen(os.dup(fd), "wb") as raw:
                out = anyio.wrap_file(raw)
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
                await out.flush()
            if found is None or not reader.finished:
                raise invalid_request("file: Field required")
        except BaseException:
            os.close(fd)
            raise
        filename = os.path.basename(found.filename or "") or "upload"
        mime_type = found.content_type or mimetypes.guess_type(filename)[0] or _DEFAULT_MIME_TYPE
        stored = StoredFile(new_id("file"), filename, mime_type, size, time.time(), fd)
        self._files[stored.id] = stored
        return stored


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """The bytes behind `fd` (from `FileStore.open`, closed by the caller) in chunks, read off the event loop."""
    offset = 0
    while chunk := await anyio.to_thread.run_sync(os.pread, fd, READ_CHUNK_BYTES, offset):
        offset += len(chunk)
        yield chunk
