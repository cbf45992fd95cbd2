"""Errors in Anthropic's shape: `{"type": "error", "error": {"type", "message"}, "request_id"}`.

SimError(status, type, message, headers)
400 invalid_request_error   bad body, header or control
401 authentication_error    missing or wrong key
403 permission_error
404 not_found_error
405 invalid_request_error   known path, wrong method
413 request_too_large
429 rate_limit_error        with `retry-after`
500 api_error
529 overloaded_error
"""

from __future__ import annotations

import orjson


class SimError(Exception):
    """An answer other than success, raised anywhere while handling a request and rendered once by the app."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers

    def body(self, request_id: str) -> bytes:
        return error_body(self.error_type, self.message, request_id)


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id})


def invalid_request(message: str) -> SimError:
    return SimError(400, "invalid_request_error", message)
