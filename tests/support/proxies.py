"""A real egress proxy for tests: tinyproxy (Debian's `tinyproxy`) on a free port, with its own configuration and log
in a temporary directory, never the system's service. Its log tells which requests went through it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.programs import require_program
from tests.support.servers import free_port, wait_for_port

# Logged by tinyproxy (at `LogLevel Connect`) for every request it takes, before it forwards it.
_REQUEST_LINE = re.compile(r"Request \(file descriptor \d+\): (\S+ \S+) HTTP/")


class TinyProxy:
    """tinyproxy listening on 127.0.0.1:`port`. `basic_auth` makes it require those credentials (407 otherwise);
    `connect_ports` restricts the ports CONNECT may reach (403 otherwise)."""

    def __init__(self, *, basic_auth: tuple[str, str] | None = None, connect_ports: Sequence[int] = ()) -> None:
        self.binary = require_program(
            "tinyproxy", "the egress proxy tests run a real proxy (apt-get install tinyproxy)"
        )
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cgw-tinyproxy-"))
        self.log = self.dir / "tinyproxy.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            f'LogFile "{self.log}"',
            "LogLevel Connect",
            "MaxClients 64",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
        ]
        if basic_auth is not None:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        lines.extend(f"ConnectPort {port}" for port in connect_ports)
        self.config = self.dir / "tinyproxy.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, credentials: str = "") -> str:
        """`http://[credentials@]127.0.0.1:port`; `credentials` as they go in a URL (`user:password`, encoded)."""
        return f"http://{credentials + '@' if credentials else ''}{self.address}"

    def start(self) -> None:
        # -d: in the foreground, so that it is our child and stops with us.
        self.process = subprocess.Popen(
            [self.binary, "-d", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def requests(self) -> list[str]:
        """Each request it took, as `METHOD target` (`CONNECT host:port`, `POST http://host:port/path`)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return _REQUEST_LINE.findall(text)

    def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> list[str]:
        """Its requests once there are `count` of them (its log is written as it takes each)."""
        deadline = time.monotonic() + timeout_s
        while len(seen := self.requests()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return seen


MakeProxy = Callable[..., TinyProxy]


@contextmanager
def tinyproxies() -> Iterator[MakeProxy]:
    """`make(**options)` starts a `TinyProxy`; every one made is stopped on the way out."""
    started: list[TinyProxy] = []

    def make(*, basic_auth: tuple[str, str] | None = None, connect_ports: Sequence[int] = ()) -> TinyProxy:
        proxy = TinyProxy(basic_auth=basic_auth, connect_ports=connect_ports)
        proxy.start()
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.stop()
