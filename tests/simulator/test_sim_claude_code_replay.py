"""Claude Code's recorded first request (tests/fixtures/claude_code): accepted under its betas, refused without."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .helpers import parse_sse

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code" / "first_request.json"


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(RECORDED.read_bytes())
    return loaded


def path_of(recorded: dict[str, Any]) -> str:
    return str(recorded["path"]).removeprefix("POST ")


async def test_it_streams_under_its_betas(http: httpx.AsyncClient, recorded: dict[str, Any]) -> None:
    response = await http.post(path_of(recorded), content=orjson.dumps(recorded["body"]), headers=recorded["headers"])

    assert response.status_code == 200, response.text
    events = parse_sse(response.content)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "message_stop"


async def test_without_the_beta_the_system_message_is_refused(
    http: httpx.AsyncClient, recorded: dict[str, Any]
) -> None:
    headers = dict(recorded["headers"])
    headers["anthropic-beta"] = ",".join(
        beta for beta in headers["anthropic-beta"].split(",") if not beta.startswith("mid-conversation-system")
    )

    response = await http.post(path_of(recorded), content=orjson.dumps(recorded["body"]), headers=headers)

    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "messages.1.role: Input should be 'user' or 'assistant'",
    }


async def test_count_tokens_matches_the_streamed_usage(http: httpx.AsyncClient, recorded: dict[str, Any]) -> None:
    body = recorded["body"]
    counted_body = {key: value for key, value in body.items() if key not in ("max_tokens", "stream")}
    streamed = await http.post(path_of(recorded), content=orjson.dumps(body), headers=recorded["headers"])
    counted = await http.post(
        "/v1/messages/count_tokens?beta=true", content=orjson.dumps(counted_body), headers=recorded["headers"]
    )

    usage = parse_sse(streamed.content)[0][1]["message"]["usage"]
    total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    assert counted.json() == {"input_tokens": total}
