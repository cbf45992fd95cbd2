"""`POST /chat` over real HTTP against the simulator."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gateway


class TestChat:
    async def test_answers_with_text_and_token_counts(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "Hello there"}, headers=gateway.headers())
        assert response.status_code == 200
        body = response.json()
        assert body["text"].strip()
        assert body["input_tokens"] > 0
        assert body["output_tokens"] > 0
        assert body["model"] == gateway.settings.default_model
        assert float(response.headers["x-gateway-overhead-ms"]) >= 0
        assert response.headers["x-request-id"]

    async def test_model_and_max_tokens_are_passed_on(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat",
                json={
                    "message": "count [[sim:tokens=500]]",
                    "model": "claude-haiku-4-5-20251001",
                    "max_tokens": 7,
                },
                headers=gateway.headers(),
            )
        body = response.json()
        assert body["model"] == "claude-haiku-4-5-20251001"
        assert body["output_tokens"] == 7
        assert body["stop_reason"] == "max_tokens"

    async def test_request_id_is_echoed(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat", json={"message": "hi"}, headers=gateway.headers(**{"X-Request-ID": "trace-me-123"})
            )
        assert response.headers["x-request-id"] == "trace-me-123"

    async def test_answer_without_text_is_a_502(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json={"message": "[[sim:fault=empty]]"}, headers=gateway.headers())
        assert response.status_code == 502
        assert response.json() == {"detail": "No text in response"}


class TestChatValidation:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "message"),
            ({"message": ""}, "message"),
            ({"message": "x" * 10_001}, "message"),
            ({"message": "hi", "max_tokens": 0}, "max_tokens"),
            ({"message": "hi", "max_tokens": 8193}, "max_tokens"),
            ({"message": "hi", "max_tokens": "many"}, "max_tokens"),
            ({"message": "hi", "temperature": 2}, "temperature"),
            ({"message": 42}, "message"),
        ],
    )
    async def test_bad_bodies_get_a_422_naming_the_field(
        self, gateway: Gateway, body: dict[str, object], field: str
    ) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post("/chat", json=body, headers=gateway.headers())
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert any(field in error["loc"] for error in detail)
        assert "input" not in detail[0]

    async def test_limits_come_from_settings(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        gateway = make_gateway(max_message_chars=5, max_tokens_limit=10)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            long = await http.post("/chat", json={"message": "123456"}, headers=gateway.headers())
            many = await http.post("/chat", json={"message": "hi", "max_tokens": 11}, headers=gateway.headers())
            fine = await http.post("/chat", json={"message": "hi", "max_tokens": 10}, headers=gateway.headers())
        assert (long.status_code, many.status_code, fine.status_code) == (422, 422, 200)

    async def test_malformed_json_is_a_422(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat",
                content=b'{"message": "hi"',
                headers={**gateway.headers(), "content-type": "application/json"},
            )
        assert response.status_code == 422


class TestChatStrictTypes:
    @pytest.mark.parametrize("max_tokens", [True, "12", 12.5])
    async def test_max_tokens_is_not_coerced(self, gateway: Gateway, max_tokens: object) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            response = await http.post(
                "/chat", json={"message": "hi", "max_tokens": max_tokens}, headers=gateway.headers()
            )
        assert response.status_code == 422
