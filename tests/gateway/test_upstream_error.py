"""`errors.upstream_error`: an unsuccessful answer of Anthropic's as the gateway's error, carrying the answer for
`/v1/*` to relay when it is an Anthropic error object, and never for a 401."""

from __future__ import annotations

import pytest

from claude_gateway.errors import (
    GatewayError,
    UpstreamFailed,
    UpstreamMisconfigured,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamReply,
    upstream_error,
)

HEADERS = {"request-id": "req_1", "x-should-retry": "false"}


def anthropic_error(kind: str, message: str) -> bytes:
    return b'{"type":"error","error":{"type":"%s","message":"%s"},"request_id":"req_1"}' % (
        kind.encode(),
        message.encode(),
    )


@pytest.mark.parametrize(
    ("status", "body", "kind", "relayed"),
    [
        (400, anthropic_error("invalid_request_error", "messages.1.role: bad"), UpstreamRejected, True),
        (429, anthropic_error("rate_limit_error", "slow down"), UpstreamRateLimited, True),
        (529, anthropic_error("overloaded_error", "Overloaded"), UpstreamOverloaded, True),
        (403, anthropic_error("permission_error", "no"), UpstreamMisconfigured, True),
        # The gateway's own key is bad: its fault, never the caller's to read about.
        (401, anthropic_error("authentication_error", "invalid x-api-key"), UpstreamMisconfigured, False),
        # Not an Anthropic error object: the gateway's own message instead.
        (502, b"<html>bad gateway</html>", UpstreamFailed, False),
        (500, b'{"error":{"type":"api_error","message":"no envelope"}}', UpstreamFailed, False),
        (500, b'{"type":"error","error":{"type":"api_error"}}', UpstreamFailed, False),
        (500, b'{"type":"error","error":"api_error"}', UpstreamFailed, False),
        (500, b"", UpstreamFailed, False),
    ],
)
def test_the_answer_is_kept_only_when_it_may_be_relayed(
    status: int, body: bytes, kind: type[GatewayError], relayed: bool
) -> None:
    error = upstream_error(status, body, HEADERS)
    assert type(error) is kind
    assert error.relayed == (UpstreamReply(status, body, HEADERS) if relayed else None)


def test_the_error_type_classifies_without_the_envelope_too() -> None:
    error = upstream_error(503, b'{"error":{"type":"overloaded_error","message":"busy"}}', {})
    assert isinstance(error, UpstreamOverloaded)
    assert error.relayed is None
