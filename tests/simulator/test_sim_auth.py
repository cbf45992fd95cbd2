"""Keys in either header, the configured key, and the `anthropic-version` header."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from .helpers import API_KEY, MODEL, MakeSimulator, body, raw_http, sdk, stats, user


class TestKeys:
    async def test_bearer_as_the_sdk_sends_it(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(model=MODEL, max_tokens=4, messages=user("Hi"))

        assert message.stop_reason == "max_tokens"

    async def test_x_api_key(self, simulator_url: str) -> None:
        async with httpx.AsyncClient(base_url=simulator_url) as http:
            response = await http.post(
                "/v1/messages", json=body(), headers={"x-api-key": "any", "anthropic-version": "2023-06-01"}
            )

        assert response.status_code == 200

    async def test_missing_key_is_a_401(self, simulator_url: str) -> None:
        async with httpx.AsyncClient(base_url=simulator_url) as http:
            response = await http.post("/v1/messages", json=body(), headers={"anthropic-version": "2023-06-01"})

        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.json()["request_id"] == response.headers["request-id"]

    @pytest.mark.parametrize("authorization", ["Basic abc", "Bearer", "Token abc"])
    async def test_other_authorization_is_no_key(self, simulator_url: str, authorization: str) -> None:
        async with httpx.AsyncClient(base_url=simulator_url) as http:
            response = await http.post(
                "/v1/messages",
                json=body(),
                headers={"authorization": authorization, "anthropic-version": "2023-06-01"},
            )

        assert response.status_code == 401

    async def test_configured_key_accepts_only_itself(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator(api_key="the-right-key")

        async with sdk(simulator.base_url, api_key="the-right-key") as right:
            assert (await right.messages.create(model=MODEL, max_tokens=4, messages=user("Hi"))).content
        async with raw_http(simulator.base_url, **{"x-api-key": "the-right-key"}) as http:
            assert (await http.post("/v1/messages", json=body())).status_code == 200
        async with sdk(simulator.base_url, api_key="a-wrong-key") as wrong:
            with pytest.raises(anthropic.AuthenticationError):
                await wrong.messages.create(model=MODEL, max_tokens=4, messages=user("Hi"))
        async with raw_http(simulator.base_url, **{"x-api-key": "a-wrong-key"}) as http:
            assert (await http.post("/v1/messages", json=body())).status_code == 401

    async def test_keys_are_not_recorded(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            await client.messages.create(
                model=MODEL, max_tokens=4, messages=user("Hi"), extra_headers={"x-api-key": API_KEY}
            )
            headers = (await stats(http))["last_headers"]

        assert "authorization" not in headers
        assert "x-api-key" not in headers
        assert API_KEY not in str(headers)


class TestVersion:
    @pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21"])
    async def test_any_dated_version_is_accepted(self, make_simulator: MakeSimulator, version: str) -> None:
        simulator = make_simulator()
        async with (
            sdk(simulator.base_url, default_headers={"anthropic-version": version}) as client,
            raw_http(simulator.base_url) as http,
        ):
            message = await client.messages.create(model=MODEL, max_tokens=4, messages=user("Hi"))
            headers = (await stats(http))["last_headers"]

        assert message.content
        assert headers["anthropic-version"] == version

    async def test_the_sdk_sends_its_own_version(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            await client.messages.create(model=MODEL, max_tokens=4, messages=user("Hi"))
            headers = (await stats(http))["last_headers"]

        assert headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION

    async def test_beta_headers_are_recorded(self, make_simulator: MakeSimulator) -> None:
        simulator = make_simulator()
        async with sdk(simulator.base_url) as client, raw_http(simulator.base_url) as http:
            await client.messages.create(
                model=MODEL,
                max_tokens=4,
                messages=user("Hi"),
                extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
            )
            headers = (await stats(http))["last_headers"]

        assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"

    async def test_missing_version_is_a_400(self, simulator_url: str) -> None:
        async with httpx.AsyncClient(base_url=simulator_url) as http:
            response = await http.post("/v1/messages", json=body(), headers={"x-api-key": API_KEY})

        assert response.status_code == 400
        assert response.json()["error"] == {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        }

    async def test_a_version_that_is_not_a_date_is_a_400(self, simulator_url: str) -> None:
        async with httpx.AsyncClient(base_url=simulator_url) as http:
            response = await http.post(
                "/v1/messages", json=body(), headers={"x-api-key": API_KEY, "anthropic-version": "latest"}
            )

        assert response.status_code == 400
