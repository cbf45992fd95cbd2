"""The price table: the shipped one, its resolution of dated ids and aliases, its file format, and `PRICES_FILE`
overriding it on a running gateway."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from claude_gateway.admission.keys import short_name
from claude_gateway.pricing import PricesError, load_prices_file, parse_prices, shipped
from claude_gateway.upstream.usage import Usage
from tests.conftest import CLIENT_KEY, Gateway

CLIENT = short_name(CLIENT_KEY)


class TestShippedTable:
    @pytest.mark.parametrize(
        ("model", "canonical"),
        [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("claude-sonnet-4-5", "claude-sonnet-4-5"),
            ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
            ("claude-opus-4-1-20250805", "claude-opus-4-1"),
            ("claude-opus-4-0", "claude-opus-4"),
            ("claude-opus-4-20250514", "claude-opus-4"),
            ("claude-sonnet-4-0", "claude-sonnet-4"),
            ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
            ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
            ("claude-3-haiku-20240307", "claude-3-haiku"),
            ("claude-sonnet-4-6", "claude-sonnet-4-6"),
            ("claude-opus-4-6", "claude-opus-4-6"),
        ],
    )
    def test_dated_ids_and_aliases_resolve_to_their_row(self, model: str, canonical: str) -> None:
        assert shipped().canonical(model) == canonical

    @pytest.mark.parametrize(
        "model", ["claude-sonnet-4-5-2025", "claude-sonnet-9", "gpt-4o", "claude-sonnet-4-5-20250929-x", ""]
    )
    def test_other_names_have_no_price(self, model: str) -> None:
        assert shipped().canonical(model) is None
        assert shipped().cost(model, Usage(input=10)) is None

    def test_rows_follow_anthropics_cache_multipliers(self) -> None:
        # Claude 3 Haiku is the exception on the page: its cache prices are rounded ($0.30 and $0.03).
        assert shipped().prices["claude-3-haiku"].cache_read == Decimal("0.03")
        for price in (row for model, row in shipped().prices.items() if model != "claude-3-haiku"):
            assert price.cache_write_5m == price.input * Decimal("1.25"), price.model
            assert price.cache_write_1h == price.input * 2, price.model
            assert price.cache_read == price.input * Decimal("0.1"), price.model

    def test_a_cost_by_hand(self) -> None:
        usage = Usage(input=1000, output=500, cache_read=20_000, cache_write=3000, cache_write_1h=1000)
        # Sonnet 4.5: 3 in, 15 out, 0.30 read, 3.75 5-minute write, 6 1-hour write, per million.
        expected = (1000 * 3 + 500 * 15 + 20_000 * Decimal("0.30") + 2000 * Decimal("3.75") + 1000 * 6) / 10**6
        assert shipped().cost("claude-sonnet-4-5-20250929", usage) == expected
        assert shipped().cost("claude-sonnet-4-5", usage, batch=True) == expected / 2


class TestUsageFromTheWire:
    def test_cache_writes_are_split_by_ttl(self) -> None:
        usage = Usage.from_wire(
            {
                "input_tokens": 5,
                "output_tokens": 7,
                "cache_read_input_tokens": 11,
                "cache_creation_input_tokens": 30,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            }
        )
        assert (usage.input, usage.output, usage.cache_read) == (5, 7, 11)
        assert (usage.cache_write, usage.cache_write_5m, usage.cache_write_1h) == (30, 10, 20)

    def test_a_total_alone_counts_as_five_minute_writes(self) -> None:
        usage = Usage.from_wire({"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 40})
        assert (usage.cache_write_5m, usage.cache_write_1h) == (40, 0)

    def test_a_stream_keeps_the_split_of_message_start(self) -> None:
        start = Usage.from_wire(
            {"input_tokens": 3, "cache_creation_input_tokens": 8, "cache_creation": {"ephemeral_1h_input_tokens": 8}}
        )
        delta = Usage.from_wire({"input_tokens": 3, "cache_creation_input_tokens": 8, "output_tokens": 9})
        merged = start.merge(delta)
        assert (merged.cache_write, merged.cache_write_1h, merged.output) == (8, 8, 9)

    @pytest.mark.parametrize("usage", [None, {}, {"input_tokens": None, "cache_creation": None}])
    def test_missing_counts_are_zero(self, usage: Any) -> None:
        assert Usage.from_wire(usage) == Usage()


class TestFileFormat:
    def test_cache_prices_default_to_anthropics_multipliers(self) -> None:
        table = parse_prices({"models": {"house-model": {"input": 2, "output": 8}}})
        price = table.prices["house-model"]
        assert (price.cache_write_5m, price.cache_write_1h, price.cache_read) == (
            Decimal("2.50"),
            Decimal(4),
            Decimal("0.2"),
        )
        assert table.batch_discount == Decimal("0.5")

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ([], "expected a mapping with `models`"),
            ({"models": {}}, "`models`: expected a non-empty mapping"),
            ({"models": {"m": {"input": 1}}}, "models.m: `output` is required"),
            ({"models": {"m": {"input": -1, "output": 1}}}, "models.m.input: must be a non-negative number"),
            ({"models": {"m": {"input": "x", "output": 1}}}, "models.m.input: 'x' is not a number"),
            ({"models": {"m": {"input": 1, "output": 1, "cache_wrte": 1}}}, "models.m: unknown field 'cache_wrte'"),
            ({"models": {"M M": {"input": 1, "output": 1}}}, "models.M M: not a model id"),
            ({"models": {"m": {"input": 1, "output": 1, "aliases": "n"}}}, "models.m.aliases: expected a list"),
            ({"batch_discount": 2, "models": {"m": {"input": 1, "output": 1}}}, "batch_discount: must be more"),
            ({"include_shipped": "yes", "models": {"m": {"input": 1, "output": 1}}}, "include_shipped: expected"),
        ],
    )
    def test_a_bad_table_names_what_is_wrong(self, data: Any, message: str) -> None:
        with pytest.raises(PricesError) as raised:
            parse_prices(data)
        assert str(raised.value).startswith(message)

    def test_a_file_can_add_to_the_shipped_table(self) -> None:
        table = parse_prices(
            {
                "include_shipped": True,
                "models": {
                    "claude-opus-4-0": {"input": 10, "output": 50},
                    "house-model": {"input": 1, "output": 2, "aliases": ["house"]},
                },
            }
        )
        assert table.canonical("house") == "house-model"
        assert table.canonical("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
        assert table.prices["claude-sonnet-4-5"] == shipped().prices["claude-sonnet-4-5"]
        # A row of the file replaces a shipped alias of the same name: claude-opus-4-0 is priced apart now.
        assert table.canonical("claude-opus-4-0") == "claude-opus-4-0"
        assert table.prices["claude-opus-4-0"].input == 10

    def test_json_files_are_read_too(self, tmp_path: Path) -> None:
        path = tmp_path / "prices.json"
        path.write_bytes(orjson.dumps({"models": {"house-model": {"input": 1, "output": 2, "aliases": ["house"]}}}))
        assert load_prices_file(path).canonical("house") == "house-model"


def other_output_tokens() -> float:
    labels = {"model": "other", "direction": "output", "client": CLIENT}
    return REGISTRY.get_sample_value("claude_gateway_tokens_total", labels) or 0.0


PRICES_FILE = """
as_of: "2026-12-01"
source: "negotiated contract"
models:
  claude-sonnet-4-6:
    input: 1000
    output: 2000
    cache_read: 100
  house-model:
    aliases: [house-model-latest-build]
    input: 50
    output: 70
"""


class TestPricesFileOverride:
    async def test_a_mounted_table_replaces_the_shipped_one(
        self, make_gateway: Callable[..., Gateway], tmp_path: Path
    ) -> None:
        path = tmp_path / "prices.yaml"
        path.write_text(PRICES_FILE)
        gateway = make_gateway(prices_file=str(path))
        other_before = other_output_tokens()
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            answers = [
                await http.post(
                    "/v1/messages",
                    json={"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
                )
                for model in ("claude-sonnet-4-6", "house-model-latest-build", "claude-haiku-4-5")
            ]
            text = (await http.get(gateway.metrics_url + "/metrics")).text
        sonnet, house, haiku = answers
        for answer, (price_in, price_out) in ((sonnet, (1000, 2000)), (house, (50, 70))):
            usage = answer.json()["usage"]
            expected = Decimal(usage["input_tokens"] * price_in + usage["output_tokens"] * price_out) / 10**6
            assert answer.headers["x-gateway-cost-usd"] == f"{expected:.6f}"
        # Not in the mounted table: no longer priced, and its label is `other`.
        assert haiku.status_code == 200
        assert "x-gateway-cost-usd" not in haiku.headers
        assert other_output_tokens() - other_before == haiku.json()["usage"]["output_tokens"]
        assert 'model="house-model"' in text
        assert REGISTRY.get_sample_value("claude_gateway_cost_usd_total", {"client": CLIENT, "model": "house-model"})
