"""Security properties: keys held as digests and compared in constant time, strict CORS, no version banners,
exposure of /docs and /metrics under the operator's control, and every dependency pinned."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from claude_gateway import __version__
from claude_gateway.admission.keys import KeyStore
from claude_gateway.errors import MissingKey, UnknownKey
from claude_gateway.settings import load_settings
from claude_gateway.upstream.client import PLACEHOLDER_KEY
from tests.conftest import CLIENT_KEY, OTHER_KEY, Gateway
from tests.hostile.conftest import MakeHardenedGateway, raw_request
from tests.hostile.secret_scan import PROMPT_MARKER, Findings, ScanningHandler, ScanningSpanProcessor, find_secret

ROOT = Path(__file__).resolve().parents[2]
FILE_KEY = "cgw-sec-file-0c7d2e"
DIGEST_ONLY_KEY = "cgw-sec-digest-9a1b4f"
ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
# Words that name the software behind the gateway; none may appear in a header.
BANNERS = re.compile(r"uvicorn|starlette|fastapi|gunicorn|python|httptools|h11|uvloop|anthropic-sdk", re.IGNORECASE)


def every_string_in(value: Any, seen: set[int] | None = None) -> list[str]:
    """Every str and bytes reachable from `value` through attributes, dicts and sequences."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += every_string_in(key, seen) + every_string_in(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            found += every_string_in(item, seen)
    elif hasattr(value, "__dict__") or hasattr(value, "__slots__"):
        names = list(getattr(value, "__dict__", {})) + list(getattr(value, "__slots__", ()))
        for name in names:
            if hasattr(value, name) and not callable(getattr(value, name)):
                found += every_string_in(getattr(value, name), seen)
    return found


class TestKeys:
    def test_the_key_store_holds_digests_only(self, tmp_path: Path) -> None:
        keys_file = tmp_path / "keys.yaml"
        digest = hashlib.sha256(DIGEST_ONLY_KEY.encode()).hexdigest()
        keys_file.write_text(f"keys:\n  - name: plain\n    key: {FILE_KEY}\n  - name: hashed\n    sha256: {digest}\n")
        store = KeyStore(load_settings(valid_api_keys=f"{CLIENT_KEY},{OTHER_KEY}", api_keys_file=str(keys_file)))
        store.load_file_now()
        assert store.authenticate(DIGEST_ONLY_KEY).name == "hashed"
        assert store.authenticate(FILE_KEY).name == "plain"
        # What the store keeps: 32-byte digests and client names. Settings keep the env keys (as SecretStr); the
        # store itself must not.
        held = "\n".join(every_string_in(store._keys) + every_string_in(store._env_keys))
        for key in (CLIENT_KEY, OTHER_KEY, FILE_KEY, DIGEST_ONLY_KEY):
            assert key not in held
        assert all(len(key_digest) == 32 for key_digest in store._keys)

    @pytest.mark.parametrize(
        "presented",
        [
            CLIENT_KEY,
            CLIENT_KEY[:-1] + "0",  # one character off
            CLIENT_KEY[:-1],  # a prefix
            "x",
            "k" * 10_000,
            hashlib.sha256(CLIENT_KEY.encode()).hexdigest(),  # the digest itself is not the key
        ],
    )
    def test_every_check_ends_in_one_constant_time_comparison_of_digests(
        self, monkeypatch: pytest.MonkeyPatch, presented: str
    ) -> None:
        calls: list[tuple[int, int]] = []
        real = hmac.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((len(a), len(b)))
            return real(a, b)

        # auth.py looks `hmac.compare_digest` up at each call.
        monkeypatch.setattr(hmac, "compare_digest", spy)
        store = KeyStore(load_settings(valid_api_keys=f"{CLIENT_KEY},{OTHER_KEY}"))
        try:
            store.authenticate(presented)
            accepted = True
        except UnknownKey:
            accepted = False
        assert accepted == (presented == CLIENT_KEY)
        # Whatever the key, exactly one comparison, of two fixed-length digests: its time says nothing of the key.
        assert calls == [(32, 32)]

    def test_no_key_is_no_comparison_and_a_401(self) -> None:
        store = KeyStore(load_settings(valid_api_keys=CLIENT_KEY))
        with pytest.raises(MissingKey):
            store.authenticate(None)
        with pytest.raises(MissingKey):
            store.authenticate("")


class TestCors:
    async def test_an_unlisted_origin_gets_no_allow_origin(self, make_gateway: Callable[..., Gateway]) -> None:
        gateway = make_gateway(cors_origins=ALLOWED_ORIGIN)
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            allowed = await http.options("/chat", headers={"Origin": ALLOWED_ORIGIN, **preflight})
            refused = await http.options("/chat", headers={"Origin": OTHER_ORIGIN, **preflight})
            simple = await http.post(
                "/chat", json={"message": "hi"}, headers={"Origin": OTHER_ORIGIN, "X-API-Key": CLIENT_KEY}
            )
            listed = await http.post(
                "/chat", json={"message": "hi"}, headers={"Origin": ALLOWED_ORIGIN, "X-API-Key": CLIENT_KEY}
            )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-origin" not in refused.headers
        assert refused.status_code >= 400
        assert "access-control-allow-origin" not in simple.headers
        assert listed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "retry-after" in listed.headers["access-control-expose-headers"].lower()
        # Keys travel in headers, never cookies: credentials mode is never allowed.
        assert "access-control-allow-credentials" not in allowed.headers

    async def test_unset_means_no_cors_headers_at_all(self, gateway: Gateway) -> None:
        assert not gateway.settings.cors_origins
        preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            options = await http.options("/chat", headers=preflight)
            post = await http.post(
                "/chat", json={"message": "hi"}, headers={"Origin": ALLOWED_ORIGIN, "X-API-Key": CLIENT_KEY}
            )
        for response in (options, post):
            assert not [name for name in response.headers if name.lower().startswith("access-control-")]
        assert post.status_code == 200


class TestNoBanners:
    async def test_no_response_names_the_software(self, make_hardened_gateway: MakeHardenedGateway) -> None:
        gateway = make_hardened_gateway(max_body_bytes=4096)
        key = {"X-API-Key": CLIENT_KEY}
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            responses = [
                await http.get("/health/live"),
                await http.get(gateway.metrics_url + "/health"),
                await http.get(gateway.metrics_url + "/metrics"),
                await http.get("/nowhere"),
                await http.post("/chat", json={"message": "hi"}),
                await http.post("/chat", json={"message": f"hi {PROMPT_MARKER}"}, headers=key),
                await http.post("/chat", json={}, headers=key),
                await http.post("/chat", content=b"x" * 5000, headers=key),
                await http.post("/chat", json={"message": "[[sim:fault=server_error]]"}, headers=key),
                await http.post("/v1/messages", json={}, headers=key),
                await http.put("/chat"),
            ]
            async with http.stream("POST", "/chat/stream", json={"message": "hi"}, headers=key) as stream:
                await stream.aread()
            responses.append(stream)
        statuses = {response.status_code for response in responses}
        assert {200, 400, 401, 404, 405, 413, 422, 502} <= statuses
        for response in responses:
            assert "server" not in response.headers
            assert "x-powered-by" not in response.headers
            for name, value in response.headers.items():
                assert not BANNERS.search(f"{name}: {value}"), (response.request.url, name, value)
                assert __version__ not in value or name == "content-length"
            if response.headers.get("content-type", "").startswith("application/json"):
                assert not BANNERS.search(response.text)
                assert "Traceback" not in response.text
        status, headers, _ = raw_request(
            gateway.server.port, b"GET /health/live HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        )
        assert status == 431
        assert "server" not in headers

    async def test_the_production_server_names_nothing_either(self, serve: Any) -> None:
        server = serve(workers=1)
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": CLIENT_KEY}) as http:
            responses = [
                await http.get("/health/ready"),
                await http.get("/nowhere"),
                await http.post("/chat", json={}),
                await http.post("/chat", json={"message": "hi"}),
            ]
        for response in responses:
            assert "server" not in response.headers
            for name, value in response.headers.items():
                assert not BANNERS.search(f"{name}: {value}"), (name, value)


class TestExposure:
    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
    async def test_docs_only_when_expose_docs(self, make_gateway: Callable[..., Gateway], path: str) -> None:
        hidden = make_gateway(expose_docs=False)
        shown = make_gateway(expose_docs=True)
        async with httpx.AsyncClient() as http:
            assert (await http.get(hidden.url + path)).status_code == 404
            assert (await http.get(shown.url + path)).status_code == 200

    async def test_docs_are_off_by_default(self) -> None:
        assert load_settings().expose_docs is False
        assert load_settings().metrics_enabled is True

    async def test_metrics_only_when_enabled(self, make_gateway: Callable[..., Gateway]) -> None:
        hidden = make_gateway(metrics_enabled=False)
        shown = make_gateway(metrics_enabled=True)
        async with httpx.AsyncClient() as http:
            off = await http.get(hidden.metrics_url + "/metrics")
            on = await http.get(shown.metrics_url + "/metrics")
        assert off.status_code == 404
        assert on.status_code == 200
        assert "claude_gateway_build_info" in on.text

    async def test_the_document_does_not_list_metrics(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            document = (await http.get("/openapi.json")).json()
        assert "/metrics" not in document["paths"]


class TestPinnedDependencies:
    def test_every_dependency_is_pinned_in_the_lock_file(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        declared = [Requirement(spec) for spec in project["dependencies"]]
        for extra in project.get("optional-dependencies", {}).values():
            declared += [Requirement(spec) for spec in extra]
        pins: dict[str, str] = {}
        # A hashed lock: a pin's `--hash=` options on continuation lines after it.
        text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                spec, *options = line.split()
                assert options, f"requirements.lock: {spec!r} has no hash"
                assert all(option.startswith("--hash=sha256:") for option in options), line
                requirement = Requirement(spec)
                specifiers = list(requirement.specifier)
                assert len(specifiers) == 1, f"requirements.lock: {line!r} is not one exact pin"
                assert specifiers[0].operator == "==", f"requirements.lock: {line!r} is not pinned with =="
                pins[canonicalize_name(requirement.name)] = specifiers[0].version
        unpinned = [str(req) for req in declared if canonicalize_name(req.name) not in pins]
        assert not unpinned, f"declared in pyproject.toml but not pinned in requirements.lock: {unpinned}"
        # And each pin satisfies what pyproject.toml asks for.
        for requirement in declared:
            version = pins[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(version, prereleases=True), f"{requirement} vs =={version}"


class TestSecretScan:
    """The suite-wide scan (tests/hostile/secret_scan.py) finds what it is meant to find."""

    def test_it_finds_keys_and_prompt_markers(self) -> None:
        assert find_secret(f'{{"client": "{CLIENT_KEY}"}}') == "a client key"
        assert find_secret("Bearer cgw-file-key-3b8e1f") == "a test client key"
        assert find_secret("upstream said sk-ant-api03-abcdef") == "an Anthropic key"
        assert find_secret("upstream said sk-ant-unsettled") == "an Anthropic key"
        assert find_secret(f"/v1/files/{PLACEHOLDER_KEY}") is None
        assert find_secret(f"prompt: {PROMPT_MARKER}") is not None
        assert find_secret("message [[sim:tokens=3]]") is not None
        assert find_secret('{"client": "key-1a2b3c4d", "path": "/chat", "status_code": 200}') is None

    def test_it_reads_a_spans_url_for_keys_but_not_for_prompt_markers(self) -> None:
        findings = Findings()
        provider = TracerProvider()
        provider.add_span_processor(ScanningSpanProcessor(findings))
        tracer = provider.get_tracer("tests.hostile.scan-self-test")
        # An id a client (or the fuzzer) chose is not a prompt, even when it looks like one.
        with tracer.start_as_current_span("GET /v1/files/{file_id}", attributes={"http.target": "/v1/files/[[sim:x"}):
            pass
        assert findings.take() == []
        with tracer.start_as_current_span(
            "GET /v1/files/{file_id}", attributes={"http.url": f"/v1/files?k={CLIENT_KEY}"}
        ):
            pass
        assert findings.take() == ["a client key in the span 'GET /v1/files/{file_id}'"]
        with tracer.start_as_current_span("chat", attributes={"gateway.note": "[[sim:tokens=3]]"}):
            pass
        assert findings.take() == ["prompt text (a simulator directive) in the span 'chat'"]

    def test_its_handler_reads_extra_fields_too(self) -> None:
        findings = Findings()
        logger = logging.getLogger("tests.hostile.scan-self-test")
        logger.propagate = False
        handler = ScanningHandler(findings)
        logger.addHandler(handler)
        try:
            logger.warning("request", extra={"client": "billing"})
            assert findings.take() == []
            logger.warning("request", extra={"authorization": f"Bearer {OTHER_KEY}"})
            leaks = findings.take()
            # A path is the client's choice: a marker in it is no prompt, a key in it still a leak.
            logger.warning("request", extra={"path": "/v1/files/[[sim:x"})
            assert findings.take() == []
            logger.warning("request", extra={"path": f"/v1/files/{CLIENT_KEY}"})
            assert len(findings.take()) == 1
        finally:
            logger.removeHandler(handler)
        assert leaks
        assert "a client key" in leaks[0]
        assert OTHER_KEY not in leaks[0]
