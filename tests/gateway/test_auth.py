"""Client keys: both header styles, the keys file (plain and sha256, live reload), and keys kept out of logs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIENT_KEY, Gateway

FILE_KEY = "cgw-file-key-3b8e1f"
HASHED_KEY = "cgw-hashed-key-a41c07"
ROTATED_KEY = "cgw-rotated-key-92fd6e"


def write_keys(path: Path, entries: str) -> None:
    path.write_text(f"keys:\n{entries}")


class TestKeyHeaders:
    async def test_missing_key_is_401(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "hi"})
        assert response.status_code == 401
        assert set(response.json()) == {"detail"}

    async def test_unknown_key_is_403(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": "nope"})
        assert response.status_code == 403
        assert response.json() == {"detail": "Invalid API key"}

    @pytest.mark.parametrize(
        "headers",
        [{"X-API-Key": CLIENT_KEY}, {"x-api-key": CLIENT_KEY}, {"Authorization": f"Bearer {CLIENT_KEY}"}],
    )
    async def test_either_header_works(self, gateway: Gateway, headers: dict[str, str]) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "hi"}, headers=headers)
        assert response.status_code == 200

    async def test_other_authorization_schemes_are_not_keys(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat", json={"message": "hi"}, headers={"Authorization": f"Basic {CLIENT_KEY}"}
            )
        assert response.status_code == 401


class TestKeysFile:
    async def test_named_plain_and_hashed_keys(self, make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
        keys = tmp_path / "keys.yaml"
        digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
        write_keys(keys, f"  - name: billing\n    key: {FILE_KEY}\n  - name: search\n    sha256: {digest}\n")
        gateway = make_gateway(api_keys_file=str(keys), valid_api_keys="")
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            plain = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": FILE_KEY})
            hashed = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": HASHED_KEY})
            digest_itself = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": digest})
        assert (plain.status_code, hashed.status_code, digest_itself.status_code) == (200, 200, 403)

    async def test_file_changes_apply_without_restart(
        self, make_gateway: Callable[..., Gateway], tmp_path: Path
    ) -> None:
        keys = tmp_path / "keys.yaml"
        write_keys(keys, f"  - name: billing\n    key: {FILE_KEY}\n")
        gateway = make_gateway(api_keys_file=str(keys), valid_api_keys="")
        write_keys(keys, f"  - name: billing\n    key: {ROTATED_KEY}\n  - name: extra\n    key: {HASHED_KEY}\n")
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            deadline = time.monotonic() + 5
            while True:
                rotated = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ROTATED_KEY})
                if rotated.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            old = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": FILE_KEY})
        assert rotated.status_code == 200
        assert old.status_code == 403

    async def test_a_broken_rewrite_keeps_the_previous_keys(
        self, make_gateway: Callable[..., Gateway], tmp_path: Path
    ) -> None:
        keys = tmp_path / "keys.yaml"
        write_keys(keys, f"  - name: billing\n    key: {FILE_KEY}\n")
        gateway = make_gateway(api_keys_file=str(keys), valid_api_keys="")
        keys.write_text("keys: [this is: not, valid")
        await asyncio.sleep(1.5)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": FILE_KEY})
        assert response.status_code == 200


class TestSecrets:
    async def test_keys_never_reach_the_logs(self, gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.DEBUG):
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                await http.post("/chat", json={"message": "hi"}, headers=gateway.headers())
                await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": "wrong-key-5512"})
                await http.post("/chat/stream", json={"message": "hi"}, headers=gateway.headers())
                await http.post("/chat", json={"message": "[[sim:fault=auth]]"}, headers=gateway.headers())
            await asyncio.sleep(0.2)
        text = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
        assert CLIENT_KEY not in text
        assert "wrong-key-5512" not in text
        assert gateway.settings.anthropic_api_key is not None
        assert gateway.settings.anthropic_api_key.get_secret_value() not in text
        names = {getattr(record, "client", None) for record in caplog.records if record.name == "claude_gateway.access"}
        assert any(name and name.startswith("key-") for name in names)
