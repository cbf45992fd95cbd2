"""What the gateway's HTTP protocol (`server.http_protocol`) and the app tell each other about a request besides the
ASGI messages: the protocol's extension in each request's scope (the client left; the body was refused), and the
upload routes' own body bounds, which the app hands the protocol through its lifespan state (`uploads`).

Here, in the web layer, rather than in the protocol's module: the app reads and writes them, and the server, which
hosts the app, imports them from here (never the other way round).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from starlette.types import Scope

DISCONNECT_EXTENSION = "claude_gateway.on_disconnect"
# The statuses a request's body is refused with: past MAX_BODY_BYTES (or an upload's bound), past its deadline.
BODY_TOO_LARGE = 413
BODY_TIMEOUT = 408


class DisconnectExtension(TypedDict):
    callbacks: list[Callable[[], None]]
    disconnected: bool
    # 0, or the status the request's body was refused with (BODY_TOO_LARGE, BODY_TIMEOUT): the app answers it.
    refused: int


def disconnect_extension(scope: Scope) -> DisconnectExtension | None:
    """The request's disconnect extension, when the server provides it (this protocol does; others may not)."""
    return (scope.get("extensions") or {}).get(DISCONNECT_EXTENSION)


@dataclass(frozen=True, slots=True)
class Uploads:
    """Requests whose body their route streams on to Anthropic (`POST /v1/files`, `POST /v1/messages/batches`):
    bounded by their own size and deadline rather than MAX_BODY_BYTES and BODY_TIMEOUT_S. The app's lifespan state
    names them (`uploads`), as it holds the settings, so that this module imports no route."""

    routes: frozenset[tuple[bytes, bytes]]
    max_bytes: int
    timeout_s: float
