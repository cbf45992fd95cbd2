"""`GET /v1/models` and `GET /v1/models/{id}` through a real gateway in front of the simulator, with the official
Python SDK: the same answers as straight to the simulator for a key without a model policy; for a key with one, only
the models it may use, paged honestly; its own request limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.conftest import CLIENT_KEY, Gateway
from tests.support.servers import Process

# The simulator's catalogue, newest first.
CATALOGUE = ["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5-20251001"]
SONNET_AND_HAIKU_KEY = "cgw-sonnet-haiku-2c7e"
OPUS_KEY = "cgw-opus-only-81d0"
KEYS_FILE = f"""
keys:
  - name: sonnet-and-haiku
    key: {SONNET_AND_HAIKU_KEY}
    models: ["claude-sonnet-*", "claude-haiku-*"]
  - name: opus-only
    key: {OPUS_KEY}
    models: ["claude-opus-*"]
"""


@pytest.fixture
async def direct(simulator: Process) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=simulator.url, api_key="sk-ant-direct", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
def policy_gateway(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS_FILE)
    return make_gateway(api_keys_file=str(keys))


def sdk_for(gateway: Gateway, key: str = CLIENT_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0)


async def ids(client: anthropic.AsyncAnthropic, **params: object) -> list[str]:
    """Every id the SDK's auto-pagination yields."""
    return [model.id async for model in client.models.list(**params)]  # type: ignore[arg-type]


class TestRelayed:
    async def test_list_and_pages_are_those_of_anthropic(
        self, gateway: Gateway, direct: anthropic.AsyncAnthropic
    ) -> None:
        async with sdk_for(gateway) as sdk:
            through = await sdk.models.list(limit=2)
            straight = await direct.models.list(limit=2)
            assert through.model_dump() == straight.model_dump()
            assert through.has_more is True
            assert await ids(sdk, limit=1) == await ids(direct, limit=1) == CATALOGUE

    async def test_retrieve_is_that_of_anthropic(self, gateway: Gateway, direct: anthropic.AsyncAnthropic) -> None:
        async with sdk_for(gateway) as sdk:
            through = await sdk.models.retrieve("claude-opus-4-6")
            with pytest.raises(anthropic.NotFoundError) as missing:
                await sdk.models.retrieve("claude-nonexistent")
        assert through.model_dump() == (await direct.models.retrieve("claude-opus-4-6")).model_dump()
        assert missing.value.body["error"] == {"type": "not_found_error", "message": "model: claude-nonexistent"}  # type: ignore[index]

    async def test_a_bad_query_is_anthropics_to_refuse(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}) as http:
            response = await http.get("/v1/models", params={"limit": "0"})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "limit: Input should be greater than or equal to 1"

    async def test_it_needs_a_key(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            listed = await http.get("/v1/models")
            one = await http.get("/v1/models/claude-opus-4-6")
        assert listed.status_code == one.status_code == 401
        assert listed.json()["error"]["type"] == "authentication_error"


class TestFilteredByPolicy:
    async def test_only_the_models_the_key_may_use_are_listed(self, policy_gateway: Gateway) -> None:
        async with sdk_for(policy_gateway, SONNET_AND_HAIKU_KEY) as sdk:
            page = await sdk.models.list()
            assert [model.id for model in page.data] == ["claude-sonnet-4-6", "claude-haiku-4-5-20251001"]
            assert page.has_more is False
        async with sdk_for(policy_gateway, OPUS_KEY) as sdk:
            assert await ids(sdk) == ["claude-opus-4-6"]

    async def test_pages_are_full_and_has_more_is_honest(self, policy_gateway: Gateway) -> None:
        async with sdk_for(policy_gateway, SONNET_AND_HAIKU_KEY) as sdk:
            first = await sdk.models.list(limit=1)
            # Not a page cut short by the opus model between the two: the next allowed one follows it.
            assert [model.id for model in first.data] == ["claude-sonnet-4-6"]
            assert (first.has_more, first.first_id, first.last_id) == (True, "claude-sonnet-4-6", "claude-sonnet-4-6")
            second = await sdk.models.list(limit=1, after_id="claude-sonnet-4-6")
            assert [model.id for model in second.data] == ["claude-haiku-4-5-20251001"]
            assert second.has_more is False
            back = await sdk.models.list(limit=1, before_id="claude-haiku-4-5-20251001")
            assert [model.id for model in back.data] == ["claude-sonnet-4-6"]
            assert back.has_more is False
            # The SDK's auto-pagination, a page of one at a time, walks exactly the allowed models.
            assert await ids(sdk, limit=1) == ["claude-sonnet-4-6", "claude-haiku-4-5-20251001"]

    async def test_a_query_the_gateway_cannot_page_is_anthropics_to_judge(self, policy_gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=policy_gateway.url, headers={"x-api-key": OPUS_KEY}) as http:
            bad_limit = await http.get("/v1/models", params={"limit": "many"})
            both_ids = await http.get("/v1/models", params={"after_id": "a", "before_id": "b"})
        assert bad_limit.status_code == 400
        assert bad_limit.json()["error"]["message"] == "limit: Input should be a valid integer"
        assert both_ids.status_code == 400
        assert both_ids.json()["error"]["message"] == "Only one of before_id and after_id may be given"

    async def test_a_model_the_key_may_not_use_does_not_exist_for_it(
        self, policy_gateway: Gateway, simulator: Process
    ) -> None:
        async with sdk_for(policy_gateway, SONNET_AND_HAIKU_KEY) as sdk:
            allowed = await sdk.models.retrieve("claude-haiku-4-5-20251001")
            with pytest.raises(anthropic.NotFoundError) as raised:
                await sdk.models.retrieve("claude-opus-4-6")
        assert allowed.id == "claude-haiku-4-5-20251001"
        assert raised.value.body["error"] == {"type": "not_found_error", "message": "model: claude-opus-4-6"}  # type: ignore[index]


class TestLimit:
    async def test_models_have_their_own_request_limit(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(rate_limit="1/minute", models_rate_limit="2/minute")
        async with sdk_for(gateway) as sdk:
            await sdk.models.list()
            await sdk.models.retrieve("claude-opus-4-6")
            with pytest.raises(anthropic.RateLimitError):
                await sdk.models.list()
            # The message limit is untouched by the listing.
            message = await sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
            )
        assert message.type == "message"
