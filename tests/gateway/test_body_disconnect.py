"""A client that leaves while its body is being read is counted as gone, not logged as a gateway error."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from tests.conftest import CLIENT_KEY, Gateway


async def send_half_a_body(port: int, path: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    writer.write(head.encode() + b'{"model": "claude')
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    del reader


@pytest.mark.parametrize("path", ["/v1/messages", "/chat"])
async def test_leaving_mid_body_is_no_error(gateway: Gateway, caplog: pytest.LogCaptureFixture, path: str) -> None:
    before = REGISTRY.get_sample_value("claude_gateway_client_disconnects_total", {"route": path}) or 0
    with caplog.at_level(logging.INFO):
        await send_half_a_body(gateway.server.port, path)
        for _ in range(100):
            if (REGISTRY.get_sample_value("claude_gateway_client_disconnects_total", {"route": path}) or 0) > before:
                break
            await asyncio.sleep(0.02)
    assert REGISTRY.get_sample_value("claude_gateway_client_disconnects_total", {"route": path}) == before + 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
