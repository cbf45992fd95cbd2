"""`GET /v1/models` pages like the API (`limit`, `after_id`, `before_id`); `GET /v1/models/{id}`."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from claude_gateway.simulator.models import MODELS

from .helpers import MODEL


class TestModels:
    async def test_the_sdk_pages_through_every_model(self, client: anthropic.AsyncAnthropic) -> None:
        first = await client.models.list(limit=1)
        every = [model.id async for model in await client.models.list(limit=1)]

        assert len(first.data) == 1
        assert first.has_more is True
        assert every == list(MODELS)

    async def test_a_page_names_its_ends(self, http: httpx.AsyncClient) -> None:
        ids = list(MODELS)
        page = (await http.get("/v1/models", params={"limit": 2})).json()
        after = (await http.get("/v1/models", params={"after_id": ids[0]})).json()
        before = (await http.get("/v1/models", params={"before_id": ids[2]})).json()

        assert [model["id"] for model in page["data"]] == ids[:2]
        assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[0], ids[1], True)
        assert [model["id"] for model in after["data"]] == ids[1:]
        assert after["has_more"] is False
        assert [model["id"] for model in before["data"]] == ids[:2]

    async def test_retrieve(self, client: anthropic.AsyncAnthropic) -> None:
        model = await client.models.retrieve(MODEL)

        assert (model.id, model.type, model.display_name) == (MODEL, "model", "Claude Sonnet 4.6")

    async def test_unknown_is_a_404(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.NotFoundError) as raised:
            await client.models.retrieve("claude-nonexistent")

        assert raised.value.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": "model: claude-nonexistent"},
            "request_id": raised.value.request_id,
        }

    @pytest.mark.parametrize(
        ("limit", "message"), [("0", "greater than or equal to 1"), ("1001", "less than or equal")]
    )
    async def test_limit_is_bounded(self, http: httpx.AsyncClient, limit: str, message: str) -> None:
        response = await http.get("/v1/models", params={"limit": limit})

        assert response.status_code == 400
        assert message in response.json()["error"]["message"]

    async def test_a_key_is_needed(self, simulator_url: str) -> None:
        async with httpx.AsyncClient(base_url=simulator_url) as bare:
            response = await bare.get("/v1/models", headers={"anthropic-version": "2023-06-01"})

        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
