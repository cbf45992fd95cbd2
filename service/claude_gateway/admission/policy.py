"""What a client key may ask for: which models, how large a `max_tokens`, which betas, which costlier features.

Set per key in the keys file (docs/CONTRACTS.md); every field is optional and a missing one allows everything:

```yaml
models: ["claude-sonnet-*", "claude-haiku-4-5"]   # globs, matched against the model asked for and its price row
max_tokens: 4096                                  # the largest `max_tokens` a request may ask for
betas: ["prompt-caching-*"]                       # allowed `anthropic-beta` values (globs)
features: [web_search]                            # allowed costlier features (FEATURES); [] allows none
```

A request the policy does not allow is refused before it reaches Anthropic: 403 `permission_error` naming what is
not allowed. The check reads only the fields it needs from the body already parsed by the route.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from claude_gateway.errors import ClientError
from claude_gateway.pricing import PriceTable

# Request features that cost more than their tokens: a service tier other than standard (priority capacity), MCP
# connectors, and Anthropic's server tools (each billed per use on top of tokens), named by their tool `type`
# without its version date (`web_search_20250305` -> `web_search`).
SERVER_TOOLS = frozenset({"web_search", "web_fetch", "code_execution"})
FEATURES = frozenset({"service_tier", "mcp_servers", *SERVER_TOOLS})
# `service_tier` values that ask for nothing beyond standard capacity.
STANDARD_SERVICE_TIERS = frozenset({"standard_only"})
_TOOL_VERSION = re.compile(r"_\d{8}$")


class PolicyDenied(ClientError):
    """The key's policy does not allow what the request asks for."""

    status_code = 403
    anthropic_type = "permission_error"
    default_message = "Not allowed for this key"


class PolicyError(ValueError):
    """A policy in the keys file that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Policy:
    """None in a field means no restriction."""

    models: tuple[str, ...] | None = None
    max_tokens: int | None = None
    betas: tuple[str, ...] | None = None
    features: frozenset[str] | None = None

    def check_model(self, model: str, prices: PriceTable) -> None:
        if self.models is None:
            return
        canonical = prices.canonical(model)
        names = (model,) if canonical is None or canonical == model else (model, canonical)
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in self.models):
            raise PolicyDenied(f"model {model!r} is not allowed for this key")

    def check_max_tokens(self, max_tokens: int) -> None:
        if self.max_tokens is not None and max_tokens > self.max_tokens:
            raise PolicyDenied(f"max_tokens {max_tokens} is more than this key allows ({self.max_tokens})")

    def check_betas(self, header: str | None) -> None:
        if self.betas is None or not header:
            return
        for beta in (part.strip() for part in header.split(",")):
            if beta and not any(fnmatch.fnmatchcase(beta, pattern) for pattern in self.betas):
                raise PolicyDenied(f"anthropic-beta {beta[:100]!r} is not allowed for this key")

    def check_features(self, request: Mapping[str, Any]) -> None:
        if self.features is None:
            return
        for feature in requested_features(request):
            if feature not in self.features:
                raise PolicyDenied(f"{feature} is not allowed for this key")

    def check_messages_request(
        self, request: Mapping[str, Any], model: str, max_tokens: int, beta_header: str | None, prices: PriceTable
    ) -> None:
        """Everything a `/v1/messages` body and its `anthropic-beta` header may ask for (403 on the first refusal)."""
        self.check_model(model, prices)
        self.check_max_tokens(max_tokens)
        self.check_betas(beta_header)
        self.check_features(request)


ALLOW_ALL = Policy()


def requested_features(request: Mapping[str, Any]) -> list[str]:
    """The costlier features (FEATURES) a Messages request asks for, in a fixed order."""
    found: list[str] = []
    tier = request.get("service_tier")
    # Any value but a standard one asks for more (an invalid one is Anthropic's to refuse, not a pass here).
    if tier is not None and not (isinstance(tier, str) and tier in STANDARD_SERVICE_TIERS):
        found.append("service_tier")
    if request.get("mcp_servers"):
        found.append("mcp_servers")
    tools = request.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            if isinstance(kind, str):
                name = _TOOL_VERSION.sub("", kind)
                if name in SERVER_TOOLS and name not in found:
                    found.append(name)
    return found


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise PolicyError(f"`{name}` must be a list of names (globs allowed)")
    return tuple(item.strip() for item in value)


def parse_policy(entry: Mapping[str, Any]) -> Policy:
    """A key's policy from its keys-file entry (fields absent: no restriction)."""
    models = _patterns(entry["models"], "models") if "models" in entry else None
    max_tokens = entry.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise PolicyError("`max_tokens` must be a positive integer")
    betas = _patterns(entry["betas"], "betas") if "betas" in entry else None
    features: frozenset[str] | None = None
    if "features" in entry:
        listed = entry["features"]
        if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
            raise PolicyError("`features` must be a list")
        unknown = sorted(set(listed) - FEATURES)
        if unknown:
            raise PolicyError(f"`features`: unknown feature {unknown[0]!r} (known: {', '.join(sorted(FEATURES))})")
        features = frozenset(listed)
    return Policy(models=models, max_tokens=max_tokens, betas=betas, features=features)
