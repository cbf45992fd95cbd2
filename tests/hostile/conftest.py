"""Fixtures for hostile clients: gateways served with the production HTTP protocol, and raw sockets to abuse them.

- `make_hardened_gateway(head_timeout_s=, loop=, lingering_time_s=, **settings)`: like `make_gateway`, but uvicorn
  runs the gateway's own `GatewayHttpProtocol` (what `claude-gateway serve` runs), with a head timeout short enough
  for a test, on asyncio's loop or uvloop (the production one);
  `hardened_gateway`: one of them shared by a module (64 KiB body bound), for tests that change nothing.
- `raw_request(port, head, body_parts)`: a request written byte for byte on a socket, for what httpx will not send.
- `serve` (from tests/server): the production server as a subprocess.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from claude_gateway.server.http_protocol import GatewayHttpProtocol
from claude_gateway.web.app import create_app
from tests.conftest import Gateway, gateway_settings
from tests.server.conftest import serve  # the production server factory, reused as is
from tests.support.servers import Process, ThreadedServer

__all__ = ["serve"]

# Short enough that a slow-client test is over in a second or two.
TEST_HEAD_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 10.0
MODULE_BODY_LIMIT = 64 * 1024

MakeHardenedGateway = Callable[..., Gateway]


def start_hardened_gateway(
    simulator_url: str,
    head_timeout_s: float = TEST_HEAD_TIMEOUT_S,
    *,
    loop: str = "asyncio",
    lingering_time_s: float = GatewayHttpProtocol.lingering_time_s,
    **overrides: Any,
) -> Gateway:
    """A gateway app served by uvicorn with the protocol `claude-gateway serve` configures."""
    protocol = type(
        "TestProtocol",
        (GatewayHttpProtocol,),
        {"head_timeout_s": head_timeout_s, "lingering_time_s": lingering_time_s},
    )
    settings = gateway_settings(simulator_url, **overrides)
    app = create_app(settings)
    server = ThreadedServer(app, metrics_port=settings.metrics_port)
    # The one difference with `make_gateway`: uvicorn's protocol is the production one.
    server.server.config.http = protocol
    server.server.config.loop = loop
    server.start()
    return Gateway(url=server.url, settings=settings, app=app, server=server)


@pytest.fixture
def make_hardened_gateway(simulator: Process) -> Iterator[MakeHardenedGateway]:
    servers: list[ThreadedServer] = []

    def make(head_timeout_s: float = TEST_HEAD_TIMEOUT_S, **overrides: Any) -> Gateway:
        url = overrides.pop("anthropic_base_url", simulator.url)
        gateway = start_hardened_gateway(url, head_timeout_s, **overrides)
        servers.append(gateway.server)
        return gateway

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def hardened_gateway(simulator: Process) -> Iterator[Gateway]:
    """One hardened gateway for a whole module of stateless abuse, with a 64 KiB body bound."""
    gateway = start_hardened_gateway(simulator.url, max_body_bytes=MODULE_BODY_LIMIT)
    yield gateway
    gateway.server.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and whatever body arrived until the server closed or the body's length was reached."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    chunked = headers.get("transfer-encoding") == "chunked"
    length = int(headers.get("content-length", "-1"))
    while not (chunked and body.endswith(b"0\r\n\r\n")) and (length < 0 or len(body) < length):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, dechunk(body) if chunked else body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `within_s`."""
    sock.settimeout(within_s)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def raw_request(port: int, head: bytes, body_parts: Iterable[bytes] = ()) -> tuple[int, dict[str, str], bytes]:
    with connect(port) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        return read_response(sock)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
