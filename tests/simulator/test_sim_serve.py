"""`serve()` as the CLI runs it: a process of its own, on a port."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .helpers import MODEL, sdk, user

START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def served() -> Iterator[str]:
    port = free_port()
    code = (
        "from claude_gateway.simulator import serve, SimulatorConfig; "
        f"serve('127.0.0.1', {port}, SimulatorConfig(ttft_ms=0, tokens_per_s=0, api_key='served-key'))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"serve() did not start: {output}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


async def test_serve_answers_the_sdk(served: str) -> None:
    async with sdk(served, api_key="served-key") as client:
        message = await client.messages.create(model=MODEL, max_tokens=5, messages=user("Hi"))
        async with client.messages.stream(model=MODEL, max_tokens=5, messages=user("Hi")) as stream:
            streamed = await stream.get_final_message()

    assert message.usage.output_tokens == 5
    assert streamed.content == message.content or streamed.usage.output_tokens == 5


async def test_serve_takes_many_connections_at_once(served: str) -> None:
    async with sdk(served, api_key="served-key") as client:
        results = await asyncio.gather(
            *(client.messages.create(model=MODEL, max_tokens=3, messages=user(f"n{i}")) for i in range(100))
        )

    assert all(result.usage.output_tokens == 3 for result in results)
