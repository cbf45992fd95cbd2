"""Claude Code itself and the official TypeScript SDK, installed from npm, against the gateway in front of the
simulator.

Claude Code runs against `claude-gateway dev` (what `make run` serves: default settings, the bundled simulator, the
development key), as a new user would try it; the TypeScript SDK against a test gateway, each of its calls compared
with the same call made straight to the simulator."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claude_gateway.cli import DEV_CLIENT_KEY
from claude_gateway.simulator.generation import BASH_WRITE_CONTENT
from tests.conftest import CLIENT_KEY, Gateway
from tests.support.npm_tools import NpmTools, npm_tools  # noqa: F401 (the fixture)
from tests.support.servers import Process, free_port, start_command

# What `claude-gateway dev` reads that the test run's own environment must not decide for it.
DEV_ENVIRONMENT = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "VALID_API_KEYS", "REDIS_URL")
_GENERATED_ID = re.compile(r"^(msg|req)_")


@pytest.fixture(scope="module")
def dev_gateway() -> Iterator[Process]:
    """`claude-gateway dev` on free ports, as `make run` starts it (JSON log lines, so that the test can read them)."""
    port = free_port()
    env = {name: "" for name in DEV_ENVIRONMENT if os.environ.get(name)}
    process = start_command(
        ["dev", "--port", str(port), "--simulator-port", str(free_port())],
        port=port,
        env={**env, "LOG_FORMAT": "json", "METRICS_PORT": str(free_port())},
    )
    yield process
    process.stop()


def session_calls(process: Process, session: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The gateway's access log lines of `/v1/messages` calls in Claude Code's session `session`, once there are
    some (a line is written just after its answer's last byte, which may be after Claude Code has exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]
        calls = [
            line
            for line in lines
            if line.get("logger") == "claude_gateway.access"
            and line.get("path") == "/v1/messages"
            and line.get("session_id") == session
        ]
        if calls or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


class TestClaudeCode:
    def test_says_hello_through_make_run(self, npm_tools: NpmTools, dev_gateway: Process) -> None:  # noqa: F811
        outcome = npm_tools.claude(dev_gateway.url, "Say hello", api_key=DEV_CLIENT_KEY)

        assert outcome.result["is_error"] is False, outcome.result
        assert outcome.result["result"]
        assert outcome.returncode == 0
        # Every call of the session is attributed to it on the gateway's access log.
        calls = session_calls(dev_gateway, outcome.result["session_id"])
        assert calls
        assert all(line["status_code"] == 200 for line in calls)
        assert all(line["client"] for line in calls)

    def test_a_bash_tool_round_trip_writes_the_file(
        self,
        npm_tools: NpmTools,  # noqa: F811
        dev_gateway: Process,
        tmp_path: Path,
    ) -> None:
        target = tmp_path / "made-through-the-gateway.txt"

        outcome = npm_tools.claude(
            dev_gateway.url,
            f"Write the file. [[sim:bash_write={target}]]",
            "--allowedTools",
            "Bash",
            api_key=DEV_CLIENT_KEY,
            cwd=tmp_path,
        )

        assert outcome.result["is_error"] is False, outcome.result
        assert outcome.result["num_turns"] == 2  # the streamed tool_use went out, the tool_result came back
        assert target.read_text() == BASH_WRITE_CONTENT + "\n"


def without_generated_ids(value: Any) -> Any:
    """`value` with the ids made afresh for each answer (messages', requests') left out."""
    if isinstance(value, dict):
        return {
            key: without_generated_ids(item)
            for key, item in value.items()
            if not (isinstance(item, str) and _GENERATED_ID.match(item)) and key != "_request_id"
        }
    if isinstance(value, list):
        return [without_generated_ids(item) for item in value]
    return value


TYPESCRIPT_CALLS = """
import Anthropic from "@anthropic-ai/sdk";
const client = new Anthropic({ maxRetries: 0 });
const model = "claude-sonnet-4-6";
const messages = [{ role: "user", content: "Hello there [[sim:tokens=5]]" }];
const created = await client.messages.create({ model, max_tokens: 16, messages });
const stream = client.messages.stream({ model, max_tokens: 16, messages });
const texts = [];
stream.on("text", (text) => texts.push(text));
const streamed = await stream.finalMessage();
const counted = await client.messages.countTokens({ model, messages });
const page = await client.models.list({ limit: 2 });
const ids = [];
for await (const listed of client.models.list({ limit: 1 })) ids.push(listed.id);
const one = await client.models.retrieve("claude-opus-4-6");
let refused = null;
try {
  await client.messages.create({
    model, max_tokens: 8, messages: [{ role: "user", content: "a" }, { role: "system", content: "b" }],
  });
} catch (error) {
  refused = { status: error.status, kind: error.constructor.name, error: error.error?.error };
}
const listing = { data: page.data, has_more: page.has_more, first_id: page.first_id, last_id: page.last_id };
console.log(JSON.stringify({ created, streamed, texts, counted, listing, ids, one, refused }));
"""


class TestTypeScriptSdk:
    def test_every_call_answers_as_straight_to_the_simulator(
        self,
        npm_tools: NpmTools,  # noqa: F811
        gateway: Gateway,
        simulator: Process,
    ) -> None:
        through = npm_tools.node(TYPESCRIPT_CALLS, base_url=gateway.url, api_key=CLIENT_KEY)
        straight = npm_tools.node(TYPESCRIPT_CALLS, base_url=simulator.url, api_key="sk-ant-direct")

        assert without_generated_ids(through) == without_generated_ids(straight)
        # And the answers are real ones, not two equal failures.
        assert through["created"]["usage"]["output_tokens"] == 5
        assert "".join(through["texts"]) == through["streamed"]["content"][0]["text"]
        assert through["counted"] == {"input_tokens": through["created"]["usage"]["input_tokens"]}
        assert through["ids"] == ["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5-20251001"]
        assert through["listing"]["has_more"] is True
        assert through["one"]["id"] == "claude-opus-4-6"
        assert through["refused"] == {
            "status": 400,
            "kind": "BadRequestError",
            "error": {
                "type": "invalid_request_error",
                "message": "messages.1.role: Input should be 'user' or 'assistant'",
            },
        }
