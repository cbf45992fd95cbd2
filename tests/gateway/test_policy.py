"""Per-key model and feature policy from the keys file, enforced before Anthropic is called; budgets parsed; admin
keys refused on client routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from claude_gateway.admission.keys import KeysFileError, parse_keys_file
from claude_gateway.settings import load_settings
from tests.conftest import CLIENT_KEY, Gateway
from tests.gateway.test_stream import sim_stats
from tests.support.servers import Process

RESTRICTED_KEY = "cgw-restricted-key-5e0a91"
OPEN_KEY = "cgw-open-key-c3f277"
ADMIN_KEY = "cgw-admin-key-7b19d4"
ALLOWED_BETA = "prompt-caching-2024-07-31"
HELLO: Any = [{"role": "user", "content": "Hello [[sim:tokens=3]]"}]

KEYS_FILE = f"""
keys:
  - name: restricted
    key: {RESTRICTED_KEY}
    models: ["claude-sonnet-*", "claude-haiku-4-5"]
    max_tokens: 256
    betas: ["{ALLOWED_BETA}", "token-efficient-*"]
    features: [web_search]
    budget_usd: {{day: 20, month: 400}}
  - name: open
    key: {OPEN_KEY}
"""


@pytest.fixture
def policy_gateway(make_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS_FILE)
    return make_gateway(api_keys_file=str(keys), admin_api_keys=ADMIN_KEY)


@pytest.fixture
async def restricted(policy_gateway: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=policy_gateway.url, api_key=RESTRICTED_KEY, max_retries=0)
    yield client
    await client.close()


async def refused(simulator: Process, request: Any) -> anthropic.PermissionDeniedError:
    """The SDK's exception for a refused call, checking that nothing reached the simulator."""
    before = (await sim_stats(simulator))["requests"]
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        await request
    assert (await sim_stats(simulator))["requests"] == before
    assert raised.value.status_code == 403
    assert raised.value.type == "permission_error"
    return raised.value


def message_of(error: anthropic.APIStatusError) -> str:
    body: Any = error.body
    return str(body["error"]["message"])


class TestMessagesPolicy:
    async def test_a_model_outside_the_globs_is_refused(
        self, restricted: anthropic.AsyncAnthropic, simulator: Process
    ) -> None:
        error = await refused(
            simulator, restricted.messages.create(model="claude-opus-4-1", max_tokens=16, messages=HELLO)
        )
        assert message_of(error) == "model 'claude-opus-4-1' is not allowed for this key"

    async def test_models_match_by_glob_and_by_price_row(self, restricted: anthropic.AsyncAnthropic) -> None:
        for model in ("claude-sonnet-4-6", "claude-haiku-4-5-20251001"):
            message = await restricted.messages.create(model=model, max_tokens=16, messages=HELLO)
            assert message.usage.output_tokens == 3

    async def test_max_tokens_above_the_keys_limit_is_refused(
        self, restricted: anthropic.AsyncAnthropic, simulator: Process
    ) -> None:
        error = await refused(
            simulator, restricted.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=HELLO)
        )
        assert message_of(error) == "max_tokens 1024 is more than this key allows (256)"
        allowed = await restricted.messages.create(model="claude-sonnet-4-6", max_tokens=256, messages=HELLO)
        assert allowed.stop_reason == "end_turn"

    async def test_a_beta_not_listed_is_refused(self, restricted: anthropic.AsyncAnthropic, simulator: Process) -> None:
        error = await refused(
            simulator,
            restricted.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=16,
                messages=HELLO,
                extra_headers={"anthropic-beta": f"{ALLOWED_BETA},files-api-2025-04-14"},
            ),
        )
        assert message_of(error) == "anthropic-beta 'files-api-2025-04-14' is not allowed for this key"
        allowed = await restricted.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=16,
            messages=HELLO,
            extra_headers={"anthropic-beta": f"{ALLOWED_BETA}, token-efficient-tools-2025-02-19"},
        )
        assert allowed.usage.output_tokens == 3

    async def test_mcp_servers_are_refused_when_not_listed(
        self, restricted: anthropic.AsyncAnthropic, simulator: Process
    ) -> None:
        mcp = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}]
        error = await refused(
            simulator,
            restricted.messages.create(
                model="claude-sonnet-4-6", max_tokens=16, messages=HELLO, extra_body={"mcp_servers": mcp}
            ),
        )
        assert message_of(error) == "mcp_servers is not allowed for this key"

    @pytest.mark.parametrize(
        ("extra", "feature"),
        [
            ({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, "code_execution"),
            ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, "web_fetch"),
            ({"service_tier": "auto"}, "service_tier"),
            ({"service_tier": {"tier": "priority"}}, "service_tier"),
        ],
    )
    async def test_costlier_features_not_listed_are_refused(
        self, restricted: anthropic.AsyncAnthropic, simulator: Process, extra: dict[str, Any], feature: str
    ) -> None:
        error = await refused(
            simulator,
            restricted.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=HELLO, extra_body=extra),
        )
        assert message_of(error) == f"{feature} is not allowed for this key"

    async def test_the_standard_tier_and_listed_features_pass(self, restricted: anthropic.AsyncAnthropic) -> None:
        standard = await restricted.messages.create(
            model="claude-sonnet-4-6", max_tokens=16, messages=HELLO, service_tier="standard_only"
        )
        searching = await restricted.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=16,
            messages=HELLO,
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        )
        assert standard.usage.output_tokens == 3
        assert searching.usage.output_tokens > 0

    async def test_a_stream_is_refused_before_it_starts(
        self, restricted: anthropic.AsyncAnthropic, simulator: Process
    ) -> None:
        async def stream() -> None:
            async with restricted.messages.stream(model="claude-opus-4-6", max_tokens=16, messages=HELLO) as events:
                await events.get_final_message()

        error = await refused(simulator, stream())
        assert "claude-opus-4-6" in message_of(error)

    async def test_a_key_without_a_policy_may_use_anything(self, policy_gateway: Gateway) -> None:
        async with anthropic.AsyncAnthropic(base_url=policy_gateway.url, api_key=OPEN_KEY, max_retries=0) as client:
            message = await client.messages.create(
                model="claude-opus-4-1",
                max_tokens=1024,
                messages=HELLO,
                extra_headers={"anthropic-beta": "files-api-2025-04-14"},
            )
        assert message.usage.output_tokens == 3


class TestChatPolicy:
    @pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
    async def test_chat_routes_refuse_in_their_own_shape(self, policy_gateway: Gateway, path: str) -> None:
        async with httpx.AsyncClient(base_url=policy_gateway.url, headers={"X-API-Key": RESTRICTED_KEY}) as http:
            model = await http.post(path, json={"message": "hi", "model": "claude-opus-4-6"})
            tokens = await http.post(path, json={"message": "hi", "max_tokens": 4096})
            fine = await http.post(path, json={"message": "hi", "max_tokens": 100})
        assert model.status_code == 403
        assert model.json() == {"detail": "model 'claude-opus-4-6' is not allowed for this key"}
        assert tokens.status_code == 403
        assert tokens.json() == {"detail": "max_tokens 4096 is more than this key allows (256)"}
        assert fine.status_code == 200


class TestLiveReload:
    async def test_a_policy_written_into_the_keys_file_applies_without_a_restart(
        self, make_gateway: Callable[..., Gateway], tmp_path: Path
    ) -> None:
        keys = tmp_path / "keys.yaml"
        keys.write_text(f"keys:\n  - name: team\n    key: {OPEN_KEY}\n")
        gateway = make_gateway(api_keys_file=str(keys))
        body = {"message": "hi", "model": "claude-opus-4-6"}
        async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": OPEN_KEY}) as http:
            assert (await http.post("/chat", json=body)).status_code == 200
            keys.write_text(f"keys:\n  - name: team\n    key: {OPEN_KEY}\n    models: [claude-haiku-*]\n")
            deadline = time.monotonic() + 10
            while (answer := await http.post("/chat", json=body)).status_code == 200:
                assert time.monotonic() < deadline, "the new policy never applied"
                await asyncio.sleep(0.1)
        assert answer.status_code == 403
        assert answer.json() == {"detail": "model 'claude-opus-4-6' is not allowed for this key"}


class TestAdminKeys:
    async def test_an_admin_key_is_refused_on_client_routes(self, policy_gateway: Gateway) -> None:
        async with anthropic.AsyncAnthropic(base_url=policy_gateway.url, api_key=ADMIN_KEY, max_retries=0) as client:
            with pytest.raises(anthropic.PermissionDeniedError) as raised:
                await client.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=HELLO)
        assert message_of(raised.value) == "Admin keys cannot be used as client keys"
        async with httpx.AsyncClient(base_url=policy_gateway.url, headers={"X-API-Key": ADMIN_KEY}) as http:
            chat = await http.post("/chat", json={"message": "hi"})
        assert chat.status_code == 403
        assert chat.json() == {"detail": "Admin keys cannot be used as client keys"}

    async def test_an_admin_key_listed_as_a_client_key_is_still_refused(
        self, make_gateway: Callable[..., Gateway]
    ) -> None:
        gateway = make_gateway(valid_api_keys=f"{CLIENT_KEY},{ADMIN_KEY}", admin_api_keys=ADMIN_KEY)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            admin = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": ADMIN_KEY})
            client = await http.post("/chat", json={"message": "hi"}, headers={"X-API-Key": CLIENT_KEY})
        assert admin.status_code == 403
        assert client.status_code == 200


class TestKeysFileFormat:
    def test_policy_and_budget_are_on_the_key(self) -> None:
        keys = parse_keys_file(KEYS_FILE, load_settings())
        by_name = {client.name: client for client in keys.values()}
        restricted, open_key = by_name["restricted"], by_name["open"]
        assert restricted.policy.models == ("claude-sonnet-*", "claude-haiku-4-5")
        assert restricted.policy.max_tokens == 256
        assert restricted.policy.features == frozenset({"web_search"})
        assert (restricted.budget.day, restricted.budget.month) == (Decimal(20), Decimal(400))
        assert open_key.policy.models is None
        assert open_key.policy.features is None
        assert not open_key.budget.limited

    def test_budgets_default_to_the_settings_per_window(self) -> None:
        text = (
            "keys:\n"
            "  - {name: a, key: k-a}\n"
            "  - {name: b, key: k-b, budget_usd: {month: 50}}\n"
            "  - {name: c, key: k-c, budget_usd: {day: null}}\n"
        )
        keys = parse_keys_file(text, load_settings(budget_usd_day="5", budget_usd_month="100"))
        budgets = {client.name: (client.budget.day, client.budget.month) for client in keys.values()}
        assert budgets == {
            "a": (Decimal(5), Decimal(100)),
            "b": (Decimal(5), Decimal(50)),
            "c": (None, Decimal(100)),
        }

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ("models: claude-*", "`models` must be a list"),
            ("max_tokens: 0", "`max_tokens` must be a positive integer"),
            ("betas: [1]", "`betas` must be a list"),
            ("features: [web_serch]", "unknown feature 'web_serch'"),
            ("budget_usd: 20", "`budget_usd` must be a mapping"),
            ("budget_usd: {week: 1}", "unknown window 'week'"),
            ("budget_usd: {day: -1}", "`budget_usd.day`"),
        ],
    )
    def test_a_bad_policy_names_the_entry_and_field(self, fields: str, message: str) -> None:
        text = f"keys:\n  - name: team\n    key: k-secret-value\n    {fields}\n"
        with pytest.raises(KeysFileError) as raised:
            parse_keys_file(text, load_settings())
        assert "entry 0 (team)" in str(raised.value)
        assert message in str(raised.value)
        assert "k-secret-value" not in str(raised.value)
