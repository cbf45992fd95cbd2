"""The asyncio load generator for what wrk cannot measure: fixed-rate (open-loop) requests and streams.

HTTP/1.1 on raw sockets (`asyncio.Protocol` on uvloop): no HTTP library, no JSON parsing of answers, so that the
client's own cost per request stays in the tens of microseconds; the report shows the CPU it used.

- Fixed rate: request i is due at `t0 + i / rate`, whether or not earlier ones have been answered (open loop: a slow
  server cannot slow the load down), and its latency runs from when it was due, so queueing in the client counts
  against the server rather than hiding (no coordinated omission). A request with no idle keep-alive connection at
  hand opens a new one.
- Streams: each on its own connection, started at a planned instant (a steady ramp, or all at once); time to first
  token and the gaps between token-bearing reads are taken from the decoded body as it arrives.

Timestamps come from `time.perf_counter()`: uvloop's `loop.time()` only moves in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

# Keep at most this many bytes of a response head (status line and headers): ours are a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024
_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Target:
    """Where a request goes and what it carries; `request_bytes()` is built once and sent as is."""

    name: str
    host: str
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def request_bytes(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


class ResponseParser:
    """An incremental HTTP/1.1 response: the status, one header of interest, and the body (Content-Length, chunked,
    or up to the connection's end), handed to `on_body` as it is decoded."""

    __slots__ = (
        "_buffer",
        "_chunk_left",
        "_length_left",
        "_on_body",
        "_state",
        "_wanted",
        "done",
        "keep_alive",
        "status",
        "wanted_value",
    )

    def __init__(self, on_body: Callable[[bytes], None] | None = None, wanted_header: bytes | None = None) -> None:
        self._on_body = on_body
        self._wanted = wanted_header
        self._buffer = b""
        self._state = "head"
        self._length_left = 0
        self._chunk_left = 0
        self.status = 0
        self.keep_alive = True
        self.wanted_value: bytes | None = None
        self.done = False

    def feed(self, data: bytes) -> bool:
        """True once the whole response has been read."""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        while buffer and not self.done:
            if self._state == "head":
                end = buffer.find(_HEAD_END)
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ValueError("response head too long")
                    self._buffer = buffer
                    return False
                self._parse_head(buffer[:end])
                buffer = buffer[end + 4 :]
            elif self._state == "length":
                piece = buffer[: self._length_left]
                buffer = buffer[len(piece) :]
                self._length_left -= len(piece)
                self._body(piece)
                if self._length_left == 0:
                    self.done = True
            elif self._state == "until_close":
                self._body(buffer)
                buffer = b""
            elif self._state == "chunk_size":
                end = buffer.find(_CRLF)
                if end < 0:
                    self._buffer = buffer
                    return False
                self._chunk_left = int(buffer[:end].split(b";", 1)[0], 16)
                buffer = buffer[end + 2 :]
                self._state = "chunk_data" if self._chunk_left else "trailer"
            elif self._state == "chunk_data":
                piece = buffer[: self._chunk_left]
                buffer = buffer[len(piece) :]
                self._chunk_left -= len(piece)
                self._body(piece)
                if self._chunk_left == 0:
                    self._state = "chunk_end"
            elif self._state == "chunk_end":
                if len(buffer) < 2:
                    self._buffer = buffer
                    return False
                buffer = buffer[2:]
                self._state = "chunk_size"
            elif self._state == "trailer":
                end = buffer.find(_CRLF)
                if end < 0:
                    self._buffer = buffer
                    return False
                buffer = buffer[end + 2 :]
                if end == 0:
                    self.done = True
        if self._state == "length" and self._length_left == 0:
            self.done = True
        return self.done

    def connection_closed(self) -> bool:
        """A body read up to the connection's end is complete when the connection ends."""
        if self._state == "until_close":
            self.done = True
        return self.done

    def _body(self, piece: bytes) -> None:
        if piece and self._on_body is not None:
            self._on_body(piece)

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(_CRLF)
        self.status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.lower() == b"close":
                self.keep_alive = False
            elif name == self._wanted:
                self.wanted_value = value
        if chunked:
            self._state = "chunk_size"
        elif length is not None:
            self._state = "length"
            self._length_left = length
            if length == 0:
                self.done = True
        else:
            self._state = "until_close"
            self.keep_alive = False


# -- the client's own health ----------------------------------------------------------------------------------------

# How often the lag probe wakes: often enough to catch a stall of a few milliseconds, rarely enough to cost nothing.
LAG_PROBE_EVERY_S = 0.005


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """How late this process's event loop wakes up while the block runs (seconds, one per probe): the client's
    timestamps are only as good as its loop is punctual, so a late loop means figures to distrust."""
    lags: list[float] = []

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_EVERY_S)
            lags.append(max(0.0, time.perf_counter() - started - LAG_PROBE_EVERY_S))

    task = asyncio.get_running_loop().create_task(probe())
    try:
        yield lags
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The cyclic collector off while measuring (a full collection over thousands of records pauses the client for
    milliseconds); what was allocated is collected after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


# -- fixed-rate (open-loop) requests --------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    done_at: float
    wanted_value: bytes | None


class _KeepAliveConnection(asyncio.Protocol):
    """One connection, one request at a time."""

    def __init__(self, wanted_header: bytes | None) -> None:
        self._wanted = wanted_header
        self.transport: asyncio.Transport | None = None
        self._parser = ResponseParser(wanted_header=wanted_header)
        self._waiter: asyncio.Future[Answer] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            finished = self._parser.feed(data)
        except ValueError as exc:
            self._fail(exc)
            return
        if finished:
            self._resolve()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser.connection_closed():
            self._resolve()
        else:
            self._fail(exc or ConnectionResetError("connection closed before the response ended"))

    def _resolve(self) -> None:
        parser = self._parser
        if not parser.keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(Answer(parser.status, time.perf_counter(), parser.wanted_value))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def request(self, payload: bytes) -> Answer:
        assert self.transport is not None
        self._parser = ResponseParser(wanted_header=self._wanted)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self._waiter


@dataclass
class FixedRateRun:
    target: str
    rate_per_s: float
    latencies_s: list[float] = field(default_factory=list)
    header_values: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    connections_opened: int = 0
    wall_s: float = 0.0


async def run_fixed_rate(
    target: Target,
    *,
    rate_per_s: float,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    header_of_interest: bytes | None = None,
) -> FixedRateRun:
    """Requests at `rate_per_s` for `warmup_s + duration_s`; only those due after the warm-up are recorded.

    `header_of_interest` (lower case): a numeric response header collected alongside (the gateway's own
    `x-gateway-overhead-ms`)."""
    loop = asyncio.get_running_loop()
    payload = target.request_bytes()
    run = FixedRateRun(target=target.name, rate_per_s=rate_per_s)
    idle: deque[_KeepAliveConnection] = deque()
    warm = int(warmup_s * rate_per_s)
    total = warm + int(duration_s * rate_per_s)
    interval = 1.0 / rate_per_s
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int, due: float) -> None:
        connection = None
        while idle and connection is None:
            candidate = idle.pop()
            if not candidate.closed:
                connection = candidate
        try:
            if connection is None:
                run.connections_opened += 1
                _, connection = await loop.create_connection(
                    lambda: _KeepAliveConnection(header_of_interest), target.host, target.port
                )
            answer = await asyncio.wait_for(connection.request(payload), timeout_s)
        except (OSError, TimeoutError, ValueError):
            if index >= warm:
                run.errors += 1
            if connection is not None and connection.transport is not None:
                connection.transport.close()
            return
        idle.append(connection)
        if index < warm:
            return
        run.statuses[answer.status] = run.statuses.get(answer.status, 0) + 1
        run.latencies_s.append(answer.done_at - due)
        if answer.wanted_value is not None:
            with contextlib.suppress(ValueError):
                run.header_values.append(float(answer.wanted_value) / 1000.0)

    started = time.perf_counter()
    index = 0
    while index < total:
        now = time.perf_counter()
        while index < total and started + index * interval <= now:
            task = loop.create_task(one(index, started + index * interval))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        if index < total:
            await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout_s + 1)
    run.wall_s = time.perf_counter() - started - warmup_s
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    return run


# -- streams --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamFormat:
    """How to recognise, in a decoded SSE body, a token-bearing event and the stream's clean end."""

    token_marker: bytes
    end_marker: bytes
    error_marker: bytes

    @property
    def longest_marker(self) -> int:
        return max(len(self.token_marker), len(self.end_marker), len(self.error_marker))


# Anthropic's events (the simulator, the gateway's /v1/messages) and the seed's `data:` protocol (/chat/stream).
ANTHROPIC_SSE = StreamFormat(b'"text_delta"', b"event: message_stop", b"event: error")
CHAT_SSE = StreamFormat(b'data: {"text"', b"data: [DONE]", b'data: {"error"')


@dataclass
class StreamRecord:
    due: float
    status: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None
    token_reads: int = 0
    gaps_s: list[float] = field(default_factory=list)
    completed: bool = False
    failed: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.due


class _StreamConnection(asyncio.Protocol):
    def __init__(self, record: StreamRecord, fmt: StreamFormat, payload: bytes, on_end: Callable[[], None]) -> None:
        self.record = record
        self.fmt = fmt
        self.payload = payload
        self.on_end = on_end
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(on_body=self._on_body)
        # The last bytes of the previous read, so a marker split across two reads is still seen once.
        self._tail = b""
        self._seen_end = False
        self._seen_error = False
        self._finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.payload)

    def _on_body(self, piece: bytes) -> None:
        fmt = self.fmt
        tail = self._tail
        window = tail + piece
        # The tail (the previous read's last bytes, one short of the longest marker) catches a marker split across
        # two reads; a whole marker inside it was counted last time, hence the subtraction.
        tokens = window.count(fmt.token_marker) - tail.count(fmt.token_marker)
        if tokens:
            now = time.perf_counter()
            record = self.record
            if record.first_token_at is None:
                record.first_token_at = now
            elif record.last_token_at is not None:
                record.gaps_s.append(now - record.last_token_at)
            record.last_token_at = now
            record.token_reads += 1
        if not self._seen_end and fmt.end_marker in window:
            self._seen_end = True
        if not self._seen_error and fmt.error_marker in window:
            self._seen_error = True
        self._tail = window[-fmt.longest_marker + 1 :]

    def data_received(self, data: bytes) -> None:
        try:
            finished = self.parser.feed(data)
        except ValueError as exc:
            self.finish(f"bad response: {exc}")
            return
        if finished:
            self.finish(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.parser.connection_closed():
            self.finish(None)
        else:
            self.finish("connection closed before the stream ended")

    def finish(self, failure: str | None) -> None:
        if self._finished:
            return
        self._finished = True
        record = self.record
        record.ended_at = time.perf_counter()
        record.status = self.parser.status
        if failure is None and record.status != 200:
            failure = f"status {record.status}"
        if failure is None and self._seen_error:
            failure = "error event"
        if failure is None and not self._seen_end:
            failure = "no end event"
        record.failed = failure
        record.completed = failure is None
        if self.transport is not None:
            self.transport.close()
        self.on_end()


@dataclass
class StreamRun:
    target: str
    planned: int
    records: list[StreamRecord]
    # (seconds since the start, streams open, the server's resident bytes) every sampling interval.
    samples: list[tuple[float, int, int]]
    wall_s: float


async def run_streams(
    target: Target,
    fmt: StreamFormat,
    *,
    starts_s: Sequence[float],
    timeout_s: float,
    sample_rss: Callable[[], int],
    sample_every_s: float,
) -> StreamRun:
    """One stream per entry of `starts_s` (seconds after the start), each on its own connection; the server's
    resident memory is sampled with the number of streams open (sent and not yet ended) every `sample_every_s`."""
    loop = asyncio.get_running_loop()
    payload = target.request_bytes()
    records: list[StreamRecord] = []
    samples: list[tuple[float, int, int]] = []
    open_streams = 0
    pending = len(starts_s)
    all_done = loop.create_future()
    connections: list[_StreamConnection] = []

    def ended() -> None:
        nonlocal open_streams, pending
        open_streams -= 1
        pending -= 1
        if pending == 0 and not all_done.done():
            all_done.set_result(None)

    async def launch(record: StreamRecord) -> None:
        nonlocal open_streams
        open_streams += 1
        connection = _StreamConnection(record, fmt, payload, ended)
        connections.append(connection)
        try:
            await loop.create_connection(lambda: connection, target.host, target.port)
        except OSError as exc:
            connection.finish(f"connect failed: {exc.__class__.__name__}")

    started = time.perf_counter() + 0.05
    tasks: set[asyncio.Task[None]] = set()
    for offset in starts_s:
        record = StreamRecord(due=started + offset)
        records.append(record)

    async def sampler() -> None:
        while True:
            samples.append((time.perf_counter() - started, open_streams, sample_rss()))
            await asyncio.sleep(sample_every_s)

    def start(record: StreamRecord) -> None:
        task = loop.create_task(launch(record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    base = loop.time() + (started - time.perf_counter())
    for record in records:
        loop.call_at(base + (record.due - started), start, record)
    sampling = loop.create_task(sampler())
    try:
        await asyncio.wait_for(asyncio.shield(all_done), timeout=(max(starts_s, default=0.0) + timeout_s))
    except TimeoutError:
        for connection in connections:
            connection.finish("timed out")
        for record in records:
            if record.ended_at is None:
                record.failed = "never started"
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    return StreamRun(
        target=target.name,
        planned=len(starts_s),
        records=records,
        samples=samples,
        wall_s=time.perf_counter() - started,
    )
