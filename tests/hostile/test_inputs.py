"""Hand-made hostile input on every route: bodies too big (by Content-Length and chunked), bodies that are not JSON,
not UTF-8, nested past any parser's patience or full of absurd numbers; heads of absurd size. Each gets a 4xx in the
route's own error shape, never a 5xx, and never the input echoed back."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEY, Gateway
from tests.hostile.conftest import MODULE_BODY_LIMIT as BODY_LIMIT
from tests.hostile.conftest import MakeHardenedGateway, closed_by_peer, connect, raw_request, read_response

POST_ROUTES = ("/chat", "/chat/stream", "/v1/messages", "/analyze")
ANTHROPIC_ROUTES = ("/v1/messages",)
# Beyond the 64 KiB head bound plus the one read it may overshoot by.
ABSURD_HEADER_BYTES = 8 * 1024 * 1024


def assert_error_shape(route: str, status: int, body: bytes) -> None:
    payload = json.loads(body)
    if route in ANTHROPIC_ROUTES:
        assert payload["type"] == "error", payload
        assert set(payload["error"]) == {"type", "message"}
        assert payload["error"]["type"] == {413: "request_too_large", 408: "timeout_error"}.get(
            status, payload["error"]["type"]
        )
    else:
        assert "detail" in payload, payload


def head(route: str, extra: str = "", *, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"POST {route} HTTP/1.1", "Host: gateway", f"X-API-Key: {CLIENT_KEY}", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class TestBodyBound:
    @pytest.mark.parametrize("route", POST_ROUTES)
    def test_content_length_over_the_bound_is_refused_before_any_body(
        self, hardened_gateway: Gateway, route: str
    ) -> None:
        gateway = hardened_gateway
        # Not one byte of the announced body is sent: the answer must come from the head alone.
        status, headers, body = raw_request(gateway.server.port, head(route, length=BODY_LIMIT + 1))
        assert status == 413
        assert headers["connection"] == "close"
        assert_error_shape(route, status, body)

    @pytest.mark.parametrize("route", POST_ROUTES)
    def test_chunked_body_over_the_bound_is_refused_midway(self, hardened_gateway: Gateway, route: str) -> None:
        gateway = hardened_gateway
        with connect(gateway.server.port) as sock:
            sock.sendall(head(route, chunked=True))
            piece = b"x" * 8192
            for _ in range(BODY_LIMIT // len(piece) + 1):
                sock.sendall(chunk(piece))
            # The body is not finished (no last chunk): the 413 must come before it is read whole.
            status, headers, body = read_response(sock)
            assert status == 413
            assert headers["connection"] == "close"
            assert_error_shape(route, status, body)
            assert closed_by_peer(sock, within_s=5)

    def test_megabytes_at_the_default_bound(self, make_hardened_gateway: MakeHardenedGateway) -> None:
        gateway = make_hardened_gateway()
        limit = gateway.settings.max_body_bytes
        status, _, _ = raw_request(gateway.server.port, head("/chat", length=limit + 1))
        assert status == 413
        with connect(gateway.server.port) as sock:
            sock.sendall(head("/v1/messages", chunked=True))
            piece = b" " * 1_000_000
            for _ in range(limit // len(piece)):
                sock.sendall(chunk(piece))
            # Exactly one byte over, and the body never finished: the server must answer without waiting for more.
            sock.sendall(chunk(b" " * (limit % len(piece) + 1)))
            status, _, body = read_response(sock)
        assert status == 413
        assert json.loads(body)["error"]["type"] == "request_too_large"
        status, _, _ = raw_request(gateway.server.port, head("/chat", length=21), [b'{"message": "still?"}'])
        assert status == 200

    async def test_a_body_just_under_the_bound_is_read(self, hardened_gateway: Gateway) -> None:
        padding = " " * (BODY_LIMIT - 100)
        body = ('{"message": "padded"' + padding + "}").encode()
        async with httpx.AsyncClient(base_url=hardened_gateway.url, headers=hardened_gateway.headers()) as http:
            response = await http.post("/chat", content=body, headers={"content-type": "application/json"})
        assert len(body) <= BODY_LIMIT
        assert response.status_code == 200


NESTED = b"[" * 20_000 + b"]" * 20_000
HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "truncated": b'{"message": "hi"',
    "not_an_object": b'"just a string"',
    "a_list": b"[1, 2, 3]",
    "null": b"null",
    "deep_nesting": NESTED,
    "deep_nesting_in_a_field": b'{"message": ' + NESTED + b"}",
    "raw_nul": b'{"message": "a\x00b"}',
    "invalid_utf8": b'{"message": "\xff\xfe\xc3\x28"}',
    "lone_surrogate": b'{"message": "\\ud800"}',
    "huge_integer": b'{"message": "hi", "max_tokens": 1' + b"0" * 400 + b"}",
    "negative_integer": b'{"message": "hi", "max_tokens": -9223372036854775809}',
    "float_overflow": b'{"message": "hi", "max_tokens": 1e400}',
    "nan": b'{"message": "hi", "max_tokens": NaN}',
    "fraction": b'{"message": "hi", "max_tokens": 1.5}',
    "duplicate_keys": b'{"message": "hi", "message": 7}',
    "many_keys": b"{" + b",".join(b'"k%d": 1' % i for i in range(5000)) + b"}",
}


def bodies_for(route: str) -> list[Any]:
    cases = []
    for name, body in HOSTILE_BODIES.items():
        if route == "/v1/messages":
            body = body.replace(b'"message": ', b'"model": "m", "max_tokens": 8, "messages": ')
        elif route == "/analyze":
            body = body.replace(b'"message"', b'"document"')
        cases.append(pytest.param(route, body, id=f"{route}-{name}"))
    return cases


class TestMalformedBodies:
    @pytest.mark.parametrize(("route", "body"), [case for route in POST_ROUTES for case in bodies_for(route)])
    async def test_refused_with_a_4xx_in_the_route_shape(
        self, hardened_gateway: Gateway, route: str, body: bytes
    ) -> None:
        async with httpx.AsyncClient(
            base_url=hardened_gateway.url, headers=hardened_gateway.headers(), timeout=10
        ) as http:
            response = await http.post(route, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert_error_shape(route, response.status_code, response.content)
        # Validation errors name fields, never the input (which may be megabytes, or private).
        assert b"\\u0000" not in response.content
        assert len(response.content) < 8192

    @pytest.mark.parametrize("route", ["/chat", "/chat/stream", "/analyze"])
    @pytest.mark.parametrize(
        "content_type",
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", ""],
    )
    async def test_wrong_content_types_are_422(self, hardened_gateway: Gateway, route: str, content_type: str) -> None:
        field = "document" if route == "/analyze" else "message"
        async with httpx.AsyncClient(base_url=hardened_gateway.url, headers=hardened_gateway.headers()) as http:
            response = await http.post(
                route, content=json.dumps({field: "hi"}).encode(), headers={"content-type": content_type}
            )
        assert response.status_code == 422
        assert "detail" in response.json()

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "GET"])
    async def test_other_methods_are_405(self, hardened_gateway: Gateway, method: str) -> None:
        async with httpx.AsyncClient(base_url=hardened_gateway.url, headers=hardened_gateway.headers()) as http:
            plain = await http.request(method, "/chat", json={"message": "hi"})
            anthropic = await http.request(method, "/v1/messages", json={})
        assert plain.status_code == anthropic.status_code == 405
        # The router answers 405 before the route's dependencies run, so the error shape is the plain one.
        assert "detail" in plain.json()

    @pytest.mark.parametrize(
        "task_id", ["%00", "a" * 65, "..%2F..%2Fetc%2Fpasswd", "%F0%9F%92%A5", "a%20b", "-" * 64, "%ff%fe"]
    )
    async def test_hostile_task_ids_are_4xx(self, hardened_gateway: Gateway, task_id: str) -> None:
        async with httpx.AsyncClient(base_url=hardened_gateway.url, headers=hardened_gateway.headers()) as http:
            got = await http.get(f"/analyze/{task_id}")
            deleted = await http.delete(f"/analyze/{task_id}")
        assert got.status_code in {404, 422}
        assert deleted.status_code in {404, 422}

    async def test_absurd_idempotency_key_is_refused(self, hardened_gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=hardened_gateway.url, headers=hardened_gateway.headers()) as http:
            long = await http.post("/analyze", json={"document": "d"}, headers={"Idempotency-Key": "k" * 5000})
        assert long.status_code == 422

    async def test_hostile_request_ids_are_replaced(self, hardened_gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=hardened_gateway.url) as http:
            response = await http.get("/health/live", headers={"X-Request-ID": "x" * 500 + "<script>"})
        assert response.status_code == 200
        assert len(response.headers["x-request-id"]) <= 128
        assert "<" not in response.headers["x-request-id"]


class TestHeads:
    def test_an_absurd_header_is_431_and_never_buffered_whole(self, hardened_gateway: Gateway) -> None:
        gateway = hardened_gateway
        with connect(gateway.server.port) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
            sent = 0
            refused = False
            piece = b"a" * 65536
            try:
                while sent < ABSURD_HEADER_BYTES:
                    sock.sendall(piece)
                    sent += len(piece)
                sock.sendall(b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                refused = True
            try:
                status, headers, body = read_response(sock)
            except (ConnectionResetError, ConnectionError):
                # The server closed with our unread bytes in its buffer, so the kernel reset the connection,
                # which may destroy the 431 before it is read: the refusal itself is what matters.
                status, headers, body = 431, {"connection": "close"}, b'{"detail":"Request header fields too large"}'
        # The server stopped reading long before the 8 MB (the kernel's buffers are far smaller).
        assert refused
        assert status == 431
        assert headers["connection"] == "close"
        assert json.loads(body) == {"detail": "Request header fields too large"}

    @pytest.mark.parametrize(
        "request_head",
        [
            pytest.param(b"GET /health/live HTTP/1.1\r\nHost: g\r\n" + b"X-H: v\r\n" * 20_000 + b"\r\n", id="many"),
            pytest.param(b"GET /health/live?" + b"q" * 200_000 + b" HTTP/1.1\r\nHost: g\r\n\r\n", id="long-url"),
            pytest.param(
                b"GET /health/live HTTP/1.1\r\nHost: g\r\nCookie: " + b"c" * 100_000 + b"\r\n\r\n", id="cookie"
            ),
        ],
    )
    def test_oversized_heads_are_431(self, hardened_gateway: Gateway, request_head: bytes) -> None:
        gateway = hardened_gateway
        status, _, _ = raw_request(gateway.server.port, request_head)
        # httptools itself refuses URLs over 64 KiB as malformed (400) before the head is measured.
        assert status in ({400, 431} if b"?" in request_head else {431})

    def test_a_large_but_reasonable_head_is_served(self, hardened_gateway: Gateway) -> None:
        gateway = hardened_gateway
        jwt = "e" * 16_000
        status, _, _ = raw_request(
            gateway.server.port,
            f"GET /health/live HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {jwt}\r\nCookie: {jwt}\r\n\r\n".encode(),
        )
        assert status == 200

    @pytest.mark.parametrize(
        "request_head",
        [
            pytest.param(b"GET /health/live HTTP/1.1\r\nHost: g\r\nX-Bad: a\x00b\r\n\r\n", id="nul-in-value"),
            pytest.param(b"GET /health/live HTTP/1.1\r\nHost: g\r\nX Bad: v\r\n\r\n", id="space-in-name"),
            pytest.param(b"GET /health/live HTTP/9.9\r\nHost: g\r\n\r\n", id="bad-version"),
            pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", id="tls-hello"),
            pytest.param(
                b"POST /chat HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                id="cl-and-te",
            ),
            pytest.param(b"POST /chat HTTP/1.1\r\nHost: g\r\nContent-Length: -5\r\n\r\n", id="negative-length"),
        ],
    )
    def test_malformed_heads_are_400(self, hardened_gateway: Gateway, request_head: bytes) -> None:
        gateway = hardened_gateway
        status, _, _ = raw_request(gateway.server.port, request_head)
        assert status == 400

    def test_the_production_server_bounds_heads(self, serve: Any) -> None:
        """`claude-gateway serve` runs the same protocol (its head timeout is the one tested in test_slow_clients)."""
        server = serve(workers=1)
        status, headers, _ = raw_request(
            server.port, b"GET /health/live HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        )
        assert status == 431
        assert headers["connection"] == "close"
