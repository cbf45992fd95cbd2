"""What Anthropic charges per model, and what one request's usage cost.

The table ships with the gateway (`prices.SHIPPED_PRICES`); a mounted file named by `PRICES_FILE`, YAML or JSON in
the same shape, replaces it without a rebuild:

```yaml
as_of: "2026-12-06"                       # when the prices were read (informational)
source: "https://..."                     # where from (informational)
batch_discount: 0.5                       # Message Batches pay this share of every price (0 < x <= 1)
include_shipped: false                    # true: these rows on top of the shipped table (same id replaces)
models:
  claude-sonnet-4-5:                      # the canonical id: what the `model` metric label shows
    aliases: [claude-sonnet-4-5-latest]   # optional: other names for the same row
    input: 3                              # USD per million uncached input tokens
    output: 15                            # USD per million output tokens
    cache_write_5m: 3.75                  # optional: default 1.25 x input
    cache_write_1h: 6                     # optional: default 2 x input
    cache_read: 0.30                      # optional: default 0.1 x input
```

A requested model resolves to a row by its exact id or alias, else with a trailing release date (`-20250929`) or
`-latest` taken off: `claude-sonnet-4-5-20250929` and `claude-sonnet-4-5` share one row, with no list of dates.

The process prices with one active table (`activate`, at app start-up): metric labels (`metrics.model_label`)
and costs both read it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from claude_gateway.prices import SHIPPED_PRICES

if TYPE_CHECKING:
    from claude_gateway.upstream.usage import Usage

# Prices are per million tokens.
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
# Anthropic's prompt-caching multipliers on the input price, used when a row leaves a cache price out.
CACHE_WRITE_5M_FACTOR = Decimal("1.25")
CACHE_WRITE_1H_FACTOR = Decimal(2)
CACHE_READ_FACTOR = Decimal("0.1")
# The Message Batches API bills half of every price.
DEFAULT_BATCH_DISCOUNT = Decimal("0.5")
# Costs are shown (header, log line) to a millionth of a dollar: a Haiku token costs $0.000001.
COST_DECIMAL_PLACES = 6

_DATED = re.compile(r"-(\d{8}|latest)$")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,99}$")
_PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


class PricesError(ValueError):
    """A price table that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices, USD per million tokens."""

    model: str
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    def cost(self, usage: Usage, *, batch_discount: Decimal | None = None) -> Decimal:
        """USD for `usage`: every direction at its own price, cache writes by their lifetime."""
        total = (
            self.input * usage.input
            + self.output * usage.output
            + self.cache_read * usage.cache_read
            + self.cache_write_5m * usage.cache_write_5m
            + self.cache_write_1h * usage.cache_write_1h
        ) / TOKENS_PER_PRICE_UNIT
        return total * batch_discount if batch_discount is not None else total


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, Price]
    aliases: Mapping[str, str] = field(default_factory=dict)
    batch_discount: Decimal = DEFAULT_BATCH_DISCOUNT
    as_of: str | None = None
    source: str | None = None

    @property
    def models(self) -> frozenset[str]:
        """The canonical ids: every value the `model` metric label can take besides `other`."""
        return frozenset(self.prices)

    def canonical(self, model: str) -> str | None:
        """The row `model` resolves to (its id), or None when it has no price."""
        if model in self.prices:
            return model
        found = self.aliases.get(model)
        if found is not None:
            return found
        undated = _DATED.sub("", model)
        if undated != model:
            return undated if undated in self.prices else self.aliases.get(undated)
        return None

    def price(self, model: str) -> Price | None:
        canonical = self.canonical(model)
        return self.prices[canonical] if canonical is not None else None

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> Decimal | None:
        """USD for `usage` of `model` (Batches at their discount); None when the model has no price."""
        price = self.price(model)
        if price is None:
            return None
        return price.cost(usage, batch_discount=self.batch_discount if batch else None)


def format_usd(cost: Decimal) -> str:
    """A cost as a decimal string to `COST_DECIMAL_PLACES` places, e.g. ``0.001350``."""
    return f"{cost:.{COST_DECIMAL_PLACES}f}"


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise PricesError(f"{where}: expected a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PricesError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise PricesError(f"{where}: must be a non-negative number")
    return number


def _optional_price(row: Mapping[str, Any], name: str, default: Decimal, where: str) -> Decimal:
    return _decimal(row[name], f"{where}.{name}") if name in row else default


def parse_prices(data: Any) -> PriceTable:
    """A price table from its decoded form (the module docstring's shape); `PricesError` naming what is wrong."""
    if not isinstance(data, Mapping):
        raise PricesError("expected a mapping with `models`")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise PricesError("`models`: expected a non-empty mapping of model id to prices")
    discount = _decimal(data.get("batch_discount", DEFAULT_BATCH_DISCOUNT), "batch_discount")
    if not 0 < discount <= 1:
        raise PricesError("batch_discount: must be more than 0 and at most 1")
    prices: dict[str, Price] = {}
    aliases: dict[str, str] = {}
    for model, row in models.items():
        where = f"models.{model}"
        if not isinstance(model, str) or not _MODEL_ID.match(model):
            raise PricesError(f"{where}: not a model id (lower-case letters, digits, '.' and '-')")
        if not isinstance(row, Mapping):
            raise PricesError(f"{where}: expected a mapping of prices")
        unknown = set(row) - {*_PRICE_FIELDS, "aliases"}
        if unknown:
            raise PricesError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        for required in ("input", "output"):
            if required not in row:
                raise PricesError(f"{where}: `{required}` is required")
        base = _decimal(row["input"], f"{where}.input")
        prices[model] = Price(
            model=model,
            input=base,
            output=_decimal(row["output"], f"{where}.output"),
            cache_write_5m=_optional_price(row, "cache_write_5m", base * CACHE_WRITE_5M_FACTOR, where),
            cache_write_1h=_optional_price(row, "cache_write_1h", base * CACHE_WRITE_1H_FACTOR, where),
            cache_read=_optional_price(row, "cache_read", base * CACHE_READ_FACTOR, where),
        )
        names = row.get("aliases", [])
        if not isinstance(names, list) or not all(isinstance(name, str) and _MODEL_ID.match(name) for name in names):
            raise PricesError(f"{where}.aliases: expected a list of model ids")
        for alias in names:
            if alias in aliases and aliases[alias] != model:
                raise PricesError(f"{where}.aliases: {alias!r} is already an alias of {aliases[alias]!r}")
            aliases[alias] = model
    include_shipped = data.get("include_shipped", False)
    if not isinstance(include_shipped, bool):
        raise PricesError("include_shipped: expected true or false")
    if include_shipped:
        # The file's rows on top of the shipped ones: a row of the file replaces the shipped row of that id.
        base_table = shipped()
        prices = {**base_table.prices, **prices}
        aliases = {**{a: m for a, m in base_table.aliases.items() if a not in prices}, **aliases}
    clash = next((alias for alias in aliases if alias in prices), None)
    if clash is not None:
        raise PricesError(f"models.{aliases[clash]}.aliases: {clash!r} is a model of its own")
    as_of, source = data.get("as_of"), data.get("source")
    return PriceTable(
        prices=prices,
        aliases=aliases,
        batch_discount=discount,
        as_of=str(as_of) if as_of is not None else None,
        source=str(source) if source is not None else None,
    )


def load_prices_file(path: Path) -> PriceTable:
    """A `PRICES_FILE`: YAML (JSON is YAML too, but is tried on its own when YAML fails)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricesError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        try:
            data = json.loads(text)
        except ValueError:
            raise PricesError(f"{str(path)!r} is not valid YAML or JSON") from None
    return parse_prices(data)


@functools.cache
def shipped() -> PriceTable:
    """The table shipped with the gateway (`prices.SHIPPED_PRICES`), parsed once."""
    return parse_prices(SHIPPED_PRICES)


_active: PriceTable | None = None


def activate(table: PriceTable) -> None:
    """Make `table` the process's prices (app start-up): labels and costs from now on use it."""
    global _active
    _active = table


def active() -> PriceTable:
    """The process's prices: the activated table, else the shipped one."""
    global _active
    if _active is None:
        _active = shipped()
    return _active
