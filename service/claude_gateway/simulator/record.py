"""Record raw SSE streams of the simulator as fixtures for replay: `python -m claude_gateway.simulator.record DIR`.

Writes `basic.txt` (a text answer), `tool_use.txt` (short text, then a `tool_use` block) and `error_midstream.txt`
(three text deltas, then `event: error`), byte for byte as sent, with the random message and tool ids replaced
by fixed ones so that re-recording an unchanged simulator changes nothing.
"""

from __future__ import annotations

import http.client
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from claude_gateway.simulator.config import SimulatorConfig
from claude_gateway.simulator.server import BackgroundSimulator

FIXTURE_MODEL = "claude-sonnet-4-6"
# Unpaced, so that recording takes no time; the bytes do not depend on pacing.
FIXTURE_CONFIG = SimulatorConfig(ttft_ms=0.0, tokens_per_s=0.0, seed=0)
_TIMEOUT_S = 10.0
_IDS = re.compile(rb"\b(msg|toolu)_01[A-Za-z0-9]{22}\b")

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}

# file name -> (request body, simulator control headers)
FIXTURES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "basic.txt": (
        {"messages": [{"role": "user", "content": "Say hello."}]},
        {"x-sim-tokens": "8"},
    ),
    "tool_use.txt": (
        {
            "messages": [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}],
            "tools": [WEATHER_TOOL],
        },
        {},
    ),
    "error_midstream.txt": (
        {"messages": [{"role": "user", "content": "Say hello."}]},
        {"x-sim-tokens": "8", "x-sim-fault": "midstream_overloaded"},
    ),
}


def _fixed_id(match: re.Match[bytes]) -> bytes:
    prefix = match.group(1)
    return prefix + b"_01" + b"Fixture".ljust(22, b"0")


def record_stream(host: str, port: int, body: dict[str, Any], controls: dict[str, str]) -> bytes:
    """POST a streaming request and return the raw event stream with fixed ids."""
    payload = {"model": FIXTURE_MODEL, "max_tokens": 1024, "stream": True, **body}
    connection = http.client.HTTPConnection(host, port, timeout=_TIMEOUT_S)
    try:
        headers = {
            "content-type": "application/json",
            "x-api-key": "fixture-key",
            "anthropic-version": "2023-06-01",
            **controls,
        }
        connection.request("POST", "/v1/messages", body=orjson.dumps(payload), headers=headers)
        response = connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"recording failed: HTTP {response.status}: {raw!r}")
    finally:
        connection.close()
    return _IDS.sub(_fixed_id, raw)


def record_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with BackgroundSimulator(FIXTURE_CONFIG) as simulator:
        for name, (body, controls) in FIXTURES.items():
            path = directory / name
            path.write_bytes(record_stream(simulator.host, simulator.port, body, controls))
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m claude_gateway.simulator.record DIRECTORY", file=sys.stderr)
        return 2
    for path in record_all(Path(argv[0])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
