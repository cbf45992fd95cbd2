"""Per-request controls, from `x-sim-*` headers or `[[sim:key=value ...]]` directives in the last user message.

A header wins over a directive for the same control. Unknown controls and bad values are a 400, so that a typo
in a test fails loudly instead of silently testing the happy path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast, get_args

from claude_gateway.simulator.errors import invalid_request

Fault = Literal[
    "rate_limit",
    "overloaded",
    "server_error",
    "auth",
    "permission",
    "not_found",
    "bad_request",
    "midstream_overloaded",
    "midstream_disconnect",
    "hang",
    "empty",
]
FAULTS: frozenset[str] = frozenset(get_args(Fault))

_DIRECTIVE = re.compile(r"\[\[sim:([^\]]*)\]\]")
_DIRECTIVE_MARK = "[[sim:"
_HEADER_PREFIX = b"x-sim-"
# Header suffix -> directive key.
_HEADER_KEYS = {
    b"fault": "fault",
    b"tokens": "tokens",
    b"ttft-ms": "ttft_ms",
    b"tokens-per-s": "tokens_per_s",
    b"retry-after": "retry_after",
    b"bash-write": "bash_write",
}
_KEYS = frozenset(_HEADER_KEYS.values())


@dataclass(frozen=True, slots=True)
class Controls:
    fault: Fault | None = None
    tokens: int | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    retry_after: float | None = None
    # A path: answer with a `tool_use` of the request's `Bash` tool whose command writes that file (see generation).
    bash_write: str | None = None


NO_CONTROLS = Controls()


def parse_controls(headers: Mapping[bytes, bytes], last_user_text: str) -> Controls:
    """The controls of one request; `NO_CONTROLS` on the fast path where there are none."""
    raw: dict[str, str] = {}
    if _DIRECTIVE_MARK in last_user_text:
        for match in _DIRECTIVE.finditer(last_user_text):
            for item in match.group(1).split():
                key, sep, value = item.partition("=")
                if not sep or key not in _KEYS:
                    raise invalid_request(f"simulator directive: unknown control {item!r} (known: {sorted(_KEYS)})")
                raw[key] = value
    for name, value in headers.items():
        if name.startswith(_HEADER_PREFIX):
            key = _HEADER_KEYS.get(name[len(_HEADER_PREFIX) :])
            if key is None:
                raise invalid_request(f"{name.decode('latin-1')}: unknown simulator control header")
            raw[key] = value.decode("latin-1").strip()
    if not raw:
        return NO_CONTROLS
    fault = raw.get("fault")
    if fault is not None and fault not in FAULTS:
        raise invalid_request(f"simulator fault: {fault!r} is not one of {sorted(FAULTS)}")
    tokens = _number(raw, "tokens", integer=True)
    return Controls(
        fault=cast(Fault | None, fault),
        tokens=None if tokens is None else int(tokens),
        ttft_ms=_number(raw, "ttft_ms"),
        tokens_per_s=_number(raw, "tokens_per_s", allow_inf=True),
        retry_after=_number(raw, "retry_after"),
        bash_write=raw.get("bash_write") or None,
    )


def _number(raw: Mapping[str, str], key: str, *, integer: bool = False, allow_inf: bool = False) -> float | None:
    text = raw.get(key)
    if text is None:
        return None
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        value = math.nan
    if integer and not (value >= 1):
        raise invalid_request(f"simulator control {key}: {text!r} must be an integer >= 1")
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        raise invalid_request(f"simulator control {key}: {text!r} must be a finite number >= 0")
    return value
