"""A 300 MB file through the production server (`claude-gateway serve`, one worker) to the simulator and back, with
the worker's resident memory sampled from /proc while the bytes pass: it stays flat, since neither the upload nor
the download is ever held whole."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import CLIENT_KEY
from tests.server.conftest import ServeFactory

BETA = "files-api-2025-04-14"
FILE_BYTES = 300 * 1024 * 1024
PIECE_BYTES = 256 * 1024
BOUNDARY = "cgw-upload-memory"
# Generous: the copy in flight is a few hundred KiB (socket buffers, one piece each way); anything like the file's
# size, or a tenth of it, fails.
MAX_RSS_GROWTH_BYTES = 30 * 1024 * 1024
SAMPLE_EVERY_S = 0.01
TRANSFER_TIMEOUT_S = 300.0


def worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise TimeoutError("no worker process")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssSampler:
    """The highest RSS of `pid` seen by a background thread, from `start()` to `stop()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def multipart_prefix(name: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="file"; filename="{name}"\r\n'
        "content-type: application/octet-stream\r\n\r\n"
    ).encode()


def body(size: int, name: str) -> tuple[int, Iterator[bytes]]:
    prefix, suffix = multipart_prefix(name), f"\r\n--{BOUNDARY}--\r\n".encode()
    piece = bytes(range(256)) * (PIECE_BYTES // 256)

    def pieces() -> Iterator[bytes]:
        yield prefix
        sent = 0
        while sent < size:
            chunk = piece[: min(PIECE_BYTES, size - sent)]
            sent += len(chunk)
            yield chunk
        yield suffix

    return len(prefix) + size + len(suffix), pieces()


def upload(http: httpx.Client, size: int, name: str) -> dict[str, object]:
    length, pieces = body(size, name)
    answer = http.post(
        "/v1/files",
        content=pieces,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(length)},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_300_mb_file_passes_with_flat_memory(serve: ServeFactory) -> None:
    server = serve(workers=1)
    worker = worker_pid(server.popen.pid)
    headers = {"x-api-key": CLIENT_KEY, "anthropic-beta": BETA, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=TRANSFER_TIMEOUT_S) as http:
        # Warm-up: every code path of an upload and a download has run once before the baseline is taken.
        warm = upload(http, 1024 * 1024, "warm.bin")
        assert len(http.get(f"/v1/files/{warm['id']}/content").content) == 1024 * 1024
        baseline = rss_bytes(worker)

        with RssSampler(worker) as during_upload:
            uploaded = upload(http, FILE_BYTES, "big.bin")
        assert uploaded["size_bytes"] == FILE_BYTES

        received = 0
        with RssSampler(worker) as during_download:
            with http.stream("GET", f"/v1/files/{uploaded['id']}/content") as download:
                assert download.status_code == 200
                assert download.headers["content-length"] == str(FILE_BYTES)
                for chunk in download.iter_bytes():
                    received += len(chunk)
        assert received == FILE_BYTES
        http.delete(f"/v1/files/{uploaded['id']}")

    growth = {
        "upload": during_upload.peak - baseline,
        "download": during_download.peak - baseline,
    }
    print(
        f"worker RSS baseline {baseline / 2**20:.1f} MiB; peak growth (MiB): "
        f"{ {step: round(value / 2**20, 1) for step, value in growth.items()} }; "
        f"samples {during_upload.samples} + {during_download.samples}"
    )
    assert during_upload.samples > 1
    assert during_download.samples > 1
    assert growth["upload"] < MAX_RSS_GROWTH_BYTES
    assert growth["download"] < MAX_RSS_GROWTH_BYTES
