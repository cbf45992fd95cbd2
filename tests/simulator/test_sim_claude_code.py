"""Claude Code itself, in `-p` mode, against the simulator: a plain answer, and a Bash tool round trip."""

from __future__ import annotations

from pathlib import Path

import httpx

from claude_gateway.simulator import BackgroundSimulator
from claude_gateway.simulator.generation import BASH_WRITE_CONTENT
from tests.support.npm_tools import NpmTools

from .helpers import MakeSimulator


def test_say_hello(npm_tools: NpmTools, simulator: BackgroundSimulator) -> None:
    outcome = npm_tools.claude(simulator.base_url, "Say hello")

    assert outcome.result["is_error"] is False, outcome.result
    assert outcome.result["result"]
    assert outcome.returncode == 0


def test_what_claude_code_sends(npm_tools: NpmTools, make_simulator: MakeSimulator) -> None:
    simulator = make_simulator()
    npm_tools.claude(simulator.base_url, "Say hello")
    seen = httpx.get(f"{simulator.base_url}/_sim/stats").json()

    assert seen["last_path"] == "POST /v1/messages?beta=true"
    betas = seen["last_headers"]["anthropic-beta"].split(",")
    assert "mid-conversation-system-2026-04-07" in betas
    assert "x-claude-code-session-id" in seen["last_headers"]
    assert [message["role"] for message in seen["last_request"]["messages"]].count("system") >= 1
    assert set(seen["responses"]) == {"200"}  # `HEAD /` and the message: nothing refused


def test_a_bash_tool_round_trip_writes_the_file(
    npm_tools: NpmTools, simulator: BackgroundSimulator, tmp_path: Path
) -> None:
    target = tmp_path / "made-by-claude.txt"

    outcome = npm_tools.claude(
        simulator.base_url, f"Write the file. [[sim:bash_write={target}]]", "--allowedTools", "Bash", cwd=tmp_path
    )

    assert outcome.result["is_error"] is False, outcome.result
    assert outcome.result["num_turns"] == 2
    assert target.read_text() == BASH_WRITE_CONTENT + "\n"
