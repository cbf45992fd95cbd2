"""Validation like Anthropic's, the other endpoints, unknown paths and methods."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from .helpers import MODEL, body, user

INVALID_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": 10, "messages": user("Hi")}, "model: Field required"),
    (body(model=""), "model: Input should be a non-empty string"),
    (body(model=7), "model: Input should be a non-empty string"),
    ({"model": MODEL, "messages": user("Hi")}, "max_tokens: Field required"),
    (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    (body(max_tokens="10"), "max_tokens: Input should be a valid integer"),
    (body(max_tokens=True), "max_tokens: Input should be a valid integer"),
    ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
    (body(messages=[]), "messages: at least one message is required"),
    (body(messages="Hi"), "messages: Input should be a valid list"),
    (body(messages=[{"role": "system", "content": "Hi"}]), "messages.0.role: Input should be 'user' or 'assistant'"),
    (body(messages=[{"role": "user"}]), "messages.0.content: Field required"),
    (body(messages=[{"role": "assistant", "content": "Hi"}]), 'messages: first message must use the "user" role'),
    (body(messages=[{"role": "user", "content": ""}]), "messages.0: all messages must have non-empty content"),
    (body(messages=[{"role": "user", "content": [{"text": "Hi"}]}]), "messages.0.content.0.type: Field required"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]), "must be non-empty"),
    (body(system=5), "system: Input should be a valid string or list of text blocks"),
    (body(stream="yes"), "stream: Input should be a valid boolean"),
    (body(tools=[{"description": "nameless"}]), "tools.0.name: Field required"),
    (body(tools=[{"name": "t"}]), "tools.0.input_schema: Field required"),
    (body(tool_choice={"type": "tool", "name": "missing"}), "tool_choice: Tool 'missing' not found"),
    (body(stop_sequences="stop"), "stop_sequences: Input should be a valid list of strings"),
]


class TestValidation:
    @pytest.mark.parametrize(("invalid", "message"), INVALID_BODIES)
    async def test_bodies_are_checked(self, http: httpx.AsyncClient, invalid: dict[str, Any], message: str) -> None:
        response = await http.post("/v1/messages", json=invalid)

        assert response.status_code == 400
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert message in error["error"]["message"]
        assert error["request_id"] == response.headers["request-id"]

    async def test_malformed_json(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", content=b'{"model": ', headers={"content-type": "application/json"})

        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    async def test_a_body_that_is_not_an_object(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=[1, 2])

        assert response.status_code == 400

    async def test_wrong_content_type(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", content=b"model=x", headers={"content-type": "text/plain"})

        assert response.status_code == 400
        assert "application/json" in response.json()["error"]["message"]

    async def test_the_sdk_raises_bad_request(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
            await client.messages.create(model=MODEL, max_tokens=0, messages=user("Hi"))

    async def test_unknown_fields_are_accepted(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages", json=body(temperature=0.2, metadata={"user_id": "u1"}))

        assert response.status_code == 200


class TestOtherEndpoints:
    async def test_count_tokens(self, client: anthropic.AsyncAnthropic) -> None:
        counted = await client.messages.count_tokens(model=MODEL, system="Be brief.", messages=user("Hello"))

        assert counted.input_tokens == 4  # ceil(len("Be brief.Hello") / 4)

    async def test_count_tokens_validates(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.count_tokens(model=MODEL, messages=[])

    async def test_models_list(self, client: anthropic.AsyncAnthropic) -> None:
        models = [model async for model in client.models.list()]

        assert MODEL in [model.id for model in models]
        assert all(model.type == "model" for model in models)

    async def test_model_retrieve(self, client: anthropic.AsyncAnthropic) -> None:
        model = await client.models.retrieve(MODEL)

        assert model.id == MODEL

    async def test_unknown_model_retrieve(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.NotFoundError):
            await client.models.retrieve("claude-nonexistent")

    async def test_any_model_name_is_served(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model="claude-from-the-future", max_tokens=4, messages=user("Hi"))

        assert message.model == "claude-from-the-future"

    async def test_the_beta_query_is_ignored(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/messages?beta=true", json=body())

        assert response.status_code == 200


class TestUnknown:
    async def test_unknown_path_is_a_404_in_anthropic_shape(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/nothing-here")

        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        assert response.json()["type"] == "error"

    @pytest.mark.parametrize(
        ("method", "path"), [("GET", "/v1/messages"), ("POST", "/v1/models"), ("GET", "/_sim/reset")]
    )
    async def test_wrong_method_is_a_405(self, http: httpx.AsyncClient, method: str, path: str) -> None:
        response = await http.request(method, path)

        assert response.status_code == 405
        assert response.json()["type"] == "error"
        assert response.headers["allow"] in ("GET", "POST")
