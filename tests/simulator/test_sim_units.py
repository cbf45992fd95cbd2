"""The pure parts: configuration checks, control parsing, token arithmetic."""

from __future__ import annotations

import pytest

from claude_gateway.simulator import SimulatorConfig
from claude_gateway.simulator.controls import NO_CONTROLS, Controls, parse_controls
from claude_gateway.simulator.errors import SimError
from claude_gateway.simulator.tokens import tokens_for_chars


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ttft_ms": -1.0}, "ttft_ms"),
        ({"ttft_ms": float("inf")}, "ttft_ms"),
        ({"tokens_per_s": -5.0}, "tokens_per_s"),
        ({"default_output_tokens": 0}, "default_output_tokens"),
        ({"api_key": ""}, "api_key"),
    ],
)
def test_config_names_the_bad_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimulatorConfig(**overrides)  # type: ignore[arg-type]


def test_no_controls_is_the_shared_default() -> None:
    assert parse_controls({b"content-type": b"application/json"}, "plain text") is NO_CONTROLS


@pytest.mark.parametrize(
    ("headers", "text", "expected"),
    [
        ({}, "[[sim:fault=overloaded]]", Controls(fault="overloaded")),
        ({}, "a [[sim:tokens=50 ttft_ms=0]] b", Controls(tokens=50, ttft_ms=0.0)),
        ({}, "[[sim:tokens=5]] and [[sim:tokens_per_s=10.5]]", Controls(tokens=5, tokens_per_s=10.5)),
        ({b"x-sim-tokens-per-s": b"inf"}, "", Controls(tokens_per_s=float("inf"))),
        ({b"x-sim-retry-after": b"2.5"}, "", Controls(retry_after=2.5)),
        ({b"x-sim-fault": b"empty"}, "[[sim:fault=hang tokens=3]]", Controls(fault="empty", tokens=3)),
    ],
)
def test_parse_controls(headers: dict[bytes, bytes], text: str, expected: Controls) -> None:
    assert parse_controls(headers, text) == expected


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({}, "[[sim:fault]]"),
        ({}, "[[sim:tokens=1.5]]"),
        ({}, "[[sim:retry_after=inf]]"),
        ({}, "[[sim:tokens_per_s=nan]]"),
        ({b"x-sim-ttft-ms": b"soon"}, ""),
    ],
)
def test_bad_controls_are_400(headers: dict[bytes, bytes], text: str) -> None:
    with pytest.raises(SimError) as caught:
        parse_controls(headers, text)

    assert caught.value.status == 400


@pytest.mark.parametrize(("chars", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (400, 100)])
def test_tokens_for_chars(chars: int, tokens: int) -> None:
    assert tokens_for_chars(chars) == tokens
