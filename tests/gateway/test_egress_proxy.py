"""The egress proxy: the environment read as curl and httpx read it (tables), and requests through a real tinyproxy
started by the test: an HTTPS upstream through a CONNECT tunnel, the simulator through HTTP_PROXY, a proxy that
requires credentials, one that refuses the tunnel (a 503 and a log line naming it, its password nowhere), NO_PROXY."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trustme
import uvloop

from claude_gateway.errors import EgressProxyFailed, GatewayError, classify
from claude_gateway.settings import SettingsError, load_settings
from claude_gateway.upstream.egress import DIRECT, EgressConfigError, EgressProxies, NoProxy, Proxy
from claude_gateway.upstream.http_client import ConnectFailed, ProxyError, ProxyRefused
from tests.conftest import CLIENT_KEY, Gateway
from tests.support.pools import AnyPool, PoolClass, kind_of
from tests.support.proxies import MakeProxy, TinyProxy, tinyproxies
from tests.support.scripted_upstream import Upstream, upstream
from tests.support.servers import Process, free_port

# tinyproxy takes letters and digits only; the URL spells them percent-encoded to show they are decoded.
PROXY_USER, PROXY_PASSWORD = "gateway", "s3cr3tpw"
ENCODED_CREDENTIALS = "gate%77ay:s3cr%33tpw"
ANTHROPIC_ANSWER = b'{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":0}}'
MESSAGE = b'{"model":"claude-sonnet-4-6","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture
def make_proxy() -> Iterator[MakeProxy]:
    with tinyproxies() as make:
        yield make


def proxies(**environ: str) -> EgressProxies:
    return EgressProxies.from_environment(environ)


class TestNoProxyRules:
    @pytest.mark.parametrize(
        ("no_proxy", "host", "port", "bypassed"),
        [
            ("", "api.anthropic.com", 443, False),
            ("*", "api.anthropic.com", 443, True),
            ("anthropic.com", "anthropic.com", 443, True),
            ("anthropic.com", "api.anthropic.com", 443, True),
            ("anthropic.com", "notanthropic.com", 443, False),
            (".anthropic.com", "anthropic.com", 443, True),  # curl: a leading dot is ignored
            (".anthropic.com", "api.anthropic.com", 443, True),
            ("*.anthropic.com", "api.anthropic.com", 443, True),
            ("ANTHROPIC.com.", "Api.Anthropic.COM", 443, True),
            ("example.com, anthropic.com", "api.anthropic.com", 443, True),
            ("example.com anthropic.com", "api.anthropic.com", 443, True),
            ("example.com,,", "api.anthropic.com", 443, False),
            ("anthropic.com:443", "api.anthropic.com", 443, True),
            ("anthropic.com:8443", "api.anthropic.com", 443, False),
            ("localhost", "localhost", 80, True),
            ("127.0.0.1", "127.0.0.1", 8000, True),
            ("127.0.0.1", "127.0.0.2", 8000, False),
            ("10.0.0.0/8", "10.1.2.3", 443, True),
            ("10.0.0.0/8", "11.1.2.3", 443, False),
            ("10.0.0.0/8", "10.example.com", 443, False),
            ("::1", "::1", 443, True),
            ("[::1]:8443", "::1", 8443, True),
            ("[::1]:8443", "::1", 443, False),
            ("fd00::/8", "fd12::5", 443, True),
            ("http://anthropic.com", "api.anthropic.com", 443, True),
        ],
    )
    def test_matches_as_curl_does(self, no_proxy: str, host: str, port: int, bypassed: bool) -> None:
        assert NoProxy.parse(no_proxy).matches(host, port) is bypassed

    @pytest.mark.parametrize("bad", ["10.0.0.0/33", "fd00::/200", "host:port", "host:70000", "1.2.3.4/x"])
    def test_a_bad_entry_names_the_variable(self, bad: str) -> None:
        with pytest.raises(EgressConfigError, match=r"^no_proxy: "):
            proxies(https_proxy="http://proxy:3128", no_proxy=bad)


class TestEnvironment:
    def test_nothing_set_is_direct(self) -> None:
        assert proxies() == DIRECT
        assert DIRECT.for_url("https://api.anthropic.com/v1/messages") is None

    def test_each_scheme_has_its_proxy_and_all_proxy_fills_in(self) -> None:
        found = proxies(HTTPS_PROXY="http://secure:3128", ALL_PROXY="http://every:8080")
        assert found.for_url("https://api.anthropic.com") == Proxy("secure", 3128)
        assert found.for_url("http://127.0.0.1:8000") == Proxy("every", 8080)

    def test_lower_case_wins_and_empty_is_unset(self) -> None:
        assert proxies(https_proxy="http://lower:1", HTTPS_PROXY="http://upper:2").https == Proxy("lower", 1)
        assert proxies(https_proxy="", HTTPS_PROXY="http://upper:2").https == Proxy("upper", 2)
        assert proxies(HTTP_PROXY="http://p:1", no_proxy="", NO_PROXY="*").for_url("http://x") is None

    def test_a_url_without_scheme_or_port_is_http_on_80(self) -> None:
        assert proxies(HTTPS_PROXY="proxy.internal").https == Proxy("proxy.internal", 80)

    def test_credentials_are_percent_decoded_into_basic_authorization_and_never_shown(self) -> None:
        proxy = proxies(HTTPS_PROXY=f"http://{ENCODED_CREDENTIALS}@proxy:3128").https
        assert proxy is not None
        assert proxy.authorization == "Basic Z2F0ZXdheTpzM2NyM3Rwdw=="  # base64 of gateway:s3cr3tpw
        assert proxy.address == "proxy:3128"
        assert PROXY_PASSWORD not in repr(proxy)
        assert "s3cr" not in repr(proxy)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("socks5://user:s3cr3tpw@proxy:1080", "HTTPS_PROXY: 'socks5://***@proxy:1080': only http:// proxies"),
            ("https://proxy:3128", "HTTPS_PROXY: 'https://proxy:3128': only http:// proxies"),
            ("http://user:s3cr3tpw@proxy:port", "HTTPS_PROXY: 'http://***@proxy:port' has no valid port"),
            ("http://:3128", "HTTPS_PROXY: 'http://:3128' names no host"),
        ],
    )
    def test_a_bad_proxy_names_the_variable_not_the_password(self, value: str, expected: str) -> None:
        with pytest.raises(EgressConfigError) as raised:
            proxies(HTTPS_PROXY=value)
        assert str(raised.value).startswith(expected)
        assert "s3cr3tpw" not in str(raised.value)

    def test_load_settings_refuses_a_bad_proxy_in_one_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTPS_PROXY", "socks5://user:s3cr3tpw@proxy:1080")
        with pytest.raises(SettingsError) as raised:
            load_settings()
        assert str(raised.value) == "HTTPS_PROXY: 'socks5://***@proxy:1080': only http:// proxies are supported"


def pool_through(pool_class: PoolClass, url: str, ca: trustme.CA | None = None, **environ: str) -> AnyPool:
    """A pool of `pool_class` to `url` with the proxies `environ` names (the environment's variables), trusting `ca`."""
    pool = pool_class(
        url,
        connect_timeout_s=5.0,
        read_timeout_s=10.0,
        keepalive_s=30.0,
        max_idle=8,
        proxies=EgressProxies.from_environment(environ),
    )
    if ca is not None:
        assert pool.ssl is not None
        ca.configure_trust(pool.ssl)
    return pool


async def post(pool: AnyPool, path: str = "/v1/messages") -> tuple[int, bytes]:
    headers = (("x-api-key", "sk-ant-test"), ("anthropic-version", "2023-06-01"), ("content-type", "application/json"))
    response = await pool.send("POST", path, headers, MESSAGE)
    try:
        return response.status, await response.read()
    finally:
        response.release()


class TLSOrigin:
    """An HTTPS upstream on 127.0.0.1 whose certificate (for `localhost` and 127.0.0.1) a trustme CA signs; it
    records the server names (SNI) its clients asked for."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.context)
        self.server_names: list[str | None] = []
        self.context.sni_callback = self._sni

    def _sni(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)


@pytest.fixture
async def tls_origin() -> AsyncIterator[tuple[TLSOrigin, Upstream]]:
    origin = TLSOrigin()
    async with upstream(tls=origin.context) as server:
        server.handler = server.keep_alive(b'{"tls":true}')
        yield origin, server


class TestThroughTinyproxy:
    async def test_https_goes_through_a_connect_tunnel_with_tls_to_the_origin(
        self, pool_class: PoolClass, make_proxy: MakeProxy, tls_origin: tuple[TLSOrigin, Upstream]
    ) -> None:
        origin, server = tls_origin
        proxy = make_proxy()
        pool = pool_through(
            pool_class, f"https://localhost:{server.port}/v1/messages", origin.ca, HTTPS_PROXY=proxy.url()
        )
        assert [await post(pool) for _ in range(3)] == [(200, b'{"tls":true}')] * 3
        await pool.aclose()
        # One tunnel, kept alive for the three requests; TLS inside it named the origin, not the proxy.
        assert proxy.wait_for_requests(1) == [f"CONNECT localhost:{server.port}"]
        assert server.connections == 1
        assert origin.server_names == ["localhost"]

    async def test_the_origin_certificate_is_checked_through_the_tunnel(
        self, pool_class: PoolClass, make_proxy: MakeProxy, tls_origin: tuple[TLSOrigin, Upstream]
    ) -> None:
        _, server = tls_origin
        proxy = make_proxy()
        pool = pool_through(pool_class, f"https://localhost:{server.port}/v1/messages", None, HTTPS_PROXY=proxy.url())
        with pytest.raises(ConnectFailed) as raised:  # the test CA is not trusted here
            await post(pool)
        await pool.aclose()
        assert not isinstance(raised.value, ProxyError)
        assert proxy.wait_for_requests(1) == [f"CONNECT localhost:{server.port}"]

    async def test_http_goes_through_http_proxy_in_absolute_form(
        self, pool_class: PoolClass, make_proxy: MakeProxy, simulator: Process
    ) -> None:
        proxy = make_proxy()
        pool = pool_through(pool_class, f"{simulator.url}/v1/messages", HTTP_PROXY=proxy.url())
        status, body = await post(pool)
        await pool.aclose()
        assert status == 200
        assert orjson.loads(body)["type"] == "message"
        assert proxy.wait_for_requests(1) == [f"POST {simulator.url}/v1/messages"]

    async def test_credentials_in_the_url_open_a_proxy_that_requires_them(
        self, pool_class: PoolClass, make_proxy: MakeProxy, tls_origin: tuple[TLSOrigin, Upstream], simulator: Process
    ) -> None:
        origin, server = tls_origin
        proxy = make_proxy(basic_auth=(PROXY_USER, PROXY_PASSWORD))
        url = proxy.url(ENCODED_CREDENTIALS)
        tunnelled = pool_through(pool_class, f"https://localhost:{server.port}/v1/messages", origin.ca, HTTPS_PROXY=url)
        assert await post(tunnelled) == (200, b'{"tls":true}')
        await tunnelled.aclose()
        forwarded = pool_through(pool_class, f"{simulator.url}/v1/messages", HTTP_PROXY=url)
        assert (await post(forwarded))[0] == 200
        await forwarded.aclose()
        assert proxy.wait_for_requests(2) == [f"CONNECT localhost:{server.port}", f"POST {simulator.url}/v1/messages"]

    async def test_a_proxy_wanting_credentials_refuses_a_request_without_them(
        self,
        pool_class: PoolClass,
        make_proxy: MakeProxy,
        tls_origin: tuple[TLSOrigin, Upstream],
        simulator: Process,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        _, server = tls_origin
        proxy = make_proxy(basic_auth=(PROXY_USER, PROXY_PASSWORD))
        for pool in (
            pool_through(pool_class, f"https://localhost:{server.port}/v1/messages", HTTPS_PROXY=proxy.url()),
            pool_through(pool_class, f"{simulator.url}/v1/messages", HTTP_PROXY=proxy.url()),
        ):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="claude_gateway.upstream"):
                with pytest.raises(ProxyRefused) as raised:
                    await post(pool)
            await pool.aclose()
            assert raised.value.status == 407
            assert_names_the_proxy(classify(raised.value), proxy, caplog)
        assert server.connections == 0

    async def test_a_proxy_refusing_wrong_credentials_refuses_the_tunnel(
        self,
        pool_class: PoolClass,
        make_proxy: MakeProxy,
        tls_origin: tuple[TLSOrigin, Upstream],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """tinyproxy answers wrong credentials with 401 (not 407): any non-2xx to CONNECT is a refusal. (To a plain
        http:// request its 401 cannot be told from the origin's, so there it is the origin's answer.)"""
        _, server = tls_origin
        proxy = make_proxy(basic_auth=(PROXY_USER, PROXY_PASSWORD))
        pool = pool_through(
            pool_class, f"https://localhost:{server.port}/v1/messages", HTTPS_PROXY=proxy.url("gateway:wrongpw1")
        )
        with caplog.at_level(logging.WARNING, logger="claude_gateway.upstream"):
            with pytest.raises(ProxyRefused) as raised:
                await post(pool)
        await pool.aclose()
        assert raised.value.status in (401, 407)
        assert_names_the_proxy(classify(raised.value), proxy, caplog)
        assert server.connections == 0

    async def test_a_proxy_refusing_the_tunnel_is_a_503_naming_it(
        self,
        pool_class: PoolClass,
        make_proxy: MakeProxy,
        tls_origin: tuple[TLSOrigin, Upstream],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        _, server = tls_origin
        proxy = make_proxy(connect_ports=[443])  # CONNECT to any other port: 403
        pool = pool_through(
            pool_class, f"https://localhost:{server.port}/v1/messages", HTTPS_PROXY=proxy.url(ENCODED_CREDENTIALS)
        )
        with caplog.at_level(logging.WARNING, logger="claude_gateway.upstream"):
            with pytest.raises(ProxyRefused) as raised:
                await post(pool)
        await pool.aclose()
        assert raised.value.status == 403
        assert_names_the_proxy(classify(raised.value), proxy, caplog)
        assert proxy.wait_for_requests(1) == [f"CONNECT localhost:{server.port}"]
        assert server.connections == 0

    async def test_a_proxy_that_cannot_be_reached_is_a_503_naming_it(
        self, pool_class: PoolClass, caplog: pytest.LogCaptureFixture
    ) -> None:
        address = f"127.0.0.1:{free_port()}"
        for pool in (
            pool_through(
                pool_class,
                "https://api.anthropic.com/v1/messages",
                HTTPS_PROXY=f"http://{ENCODED_CREDENTIALS}@{address}",
            ),
            pool_through(
                pool_class, "http://api.anthropic.com/v1/messages", HTTP_PROXY=f"http://{ENCODED_CREDENTIALS}@{address}"
            ),
        ):
            with caplog.at_level(logging.WARNING, logger="claude_gateway.upstream"):
                with pytest.raises(ProxyError) as raised:
                    await post(pool)
            await pool.aclose()
            error = classify(raised.value)
            assert isinstance(error, EgressProxyFailed)
            assert error.status_code == 503
            assert address in error.message
            assert "s3cr" not in error.message
            assert "s3cr" not in caplog.text

    async def test_no_proxy_goes_direct(
        self, pool_class: PoolClass, make_proxy: MakeProxy, tls_origin: tuple[TLSOrigin, Upstream]
    ) -> None:
        origin, server = tls_origin
        proxy = make_proxy()
        environ = {"HTTPS_PROXY": proxy.url(), "NO_PROXY": ".internal,localhost"}
        direct = pool_through(pool_class, f"https://localhost:{server.port}/v1/messages", origin.ca, **environ)
        assert direct.proxy is None
        assert await post(direct) == (200, b'{"tls":true}')
        await direct.aclose()
        # The same configuration for a host NO_PROXY does not name goes through the proxy: its log is live.
        proxied = pool_through(pool_class, f"https://127.0.0.1:{server.port}/v1/messages", origin.ca, **environ)
        assert await post(proxied) == (200, b'{"tls":true}')
        await proxied.aclose()
        assert proxy.wait_for_requests(1) == [f"CONNECT 127.0.0.1:{server.port}"]


def test_the_tunnel_on_uvloop(make_proxy: MakeProxy, pool_class: PoolClass) -> None:
    """The gateway's workers run uvloop: CONNECT on its sockets, then TLS started on the tunnel's socket."""
    proxy = make_proxy()
    origin = TLSOrigin()

    async def through_the_tunnel() -> tuple[list[tuple[int, bytes]], int]:
        async with upstream(tls=origin.context) as server:
            server.handler = server.keep_alive(b'{"tls":true}')
            pool = pool_through(
                pool_class, f"https://localhost:{server.port}/v1/messages", origin.ca, HTTPS_PROXY=proxy.url()
            )
            answers = [await post(pool) for _ in range(2)]
            await pool.aclose()
            return answers, server.port

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answers, port = runner.run(through_the_tunnel())
    assert answers == [(200, b'{"tls":true}')] * 2
    assert proxy.wait_for_requests(1) == [f"CONNECT localhost:{port}"]
    assert origin.server_names == ["localhost"]


def assert_names_the_proxy(error: GatewayError, proxy: TinyProxy, caplog: pytest.LogCaptureFixture) -> None:
    """A 503 whose message names the proxy by host:port; one warning naming it; its password nowhere."""
    assert isinstance(error, EgressProxyFailed)
    assert error.status_code == 503
    assert proxy.address in error.message
    warnings = [record for record in caplog.records if record.name == "claude_gateway.upstream"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert proxy.address in warnings[0].getMessage()
    for secret in (PROXY_PASSWORD, "s3cr%33tpw", "wrongpw1"):
        assert secret not in error.message
        assert secret not in caplog.text


class TestTheGatewayBehindAProxy:
    async def test_v1_messages_goes_through_http_proxy(
        self,
        pool_class: PoolClass,
        make_proxy: MakeProxy,
        make_gateway: Callable[..., Gateway],
        simulator: Process,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        proxy = make_proxy(basic_auth=(PROXY_USER, PROXY_PASSWORD))
        monkeypatch.setenv("HTTP_PROXY", proxy.url(ENCODED_CREDENTIALS))
        gateway = make_gateway(upstream_http_client=kind_of(pool_class))
        async with httpx.AsyncClient(
            base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}, trust_env=False
        ) as client:
            answer = await client.post("/v1/messages", content=MESSAGE, headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "message"
        assert proxy.wait_for_requests(1) == [f"POST {simulator.url}/v1/messages"]

    async def test_the_deep_health_check_and_the_relay_go_through_the_same_proxy(
        self,
        make_proxy: MakeProxy,
        make_gateway: Callable[..., Gateway],
        simulator: Process,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """One client for every call to Anthropic (issue 12): the deep `/health` check cannot say "connected" by a
        path the relay does not take. The proxy sees both calls, each with the gateway's credentials for it."""
        proxy = make_proxy(basic_auth=(PROXY_USER, PROXY_PASSWORD))
        monkeypatch.setenv("HTTP_PROXY", proxy.url(ENCODED_CREDENTIALS))
        gateway = make_gateway()
        async with httpx.AsyncClient(headers={"x-api-key": CLIENT_KEY}, trust_env=False) as client:
            message = await client.post(
                gateway.url + "/v1/messages", content=MESSAGE, headers={"content-type": "application/json"}
            )
            health = await client.get(gateway.metrics_url + "/health")
        assert message.status_code == 200, message.text
        assert health.status_code == 200, health.text
        assert health.json()["claude"] == "connected"
        assert proxy.wait_for_requests(2) == [f"POST {simulator.url}/v1/messages"] * 2

    async def test_v1_messages_goes_through_a_connect_tunnel(
        self,
        pool_class: PoolClass,
        make_proxy: MakeProxy,
        make_gateway: Callable[..., Gateway],
        tls_origin: tuple[TLSOrigin, Upstream],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        origin, server = tls_origin
        server.handler = server.keep_alive(ANTHROPIC_ANSWER, b"content-type: application/json")
        proxy = make_proxy(basic_auth=(PROXY_USER, PROXY_PASSWORD))
        monkeypatch.setenv("HTTPS_PROXY", proxy.url(ENCODED_CREDENTIALS))
        # The gateway's TLS context trusts the system's CAs, which SSL_CERT_FILE names: here, the test's CA.
        ca_file = tmp_path / "ca.pem"
        origin.ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        gateway = make_gateway(
            anthropic_base_url=f"https://localhost:{server.port}", upstream_http_client=kind_of(pool_class)
        )
        async with httpx.AsyncClient(
            base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}, trust_env=False
        ) as client:
            answer = await client.post("/v1/messages", content=MESSAGE, headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.content == ANTHROPIC_ANSWER
        assert proxy.wait_for_requests(1) == [f"CONNECT localhost:{server.port}"]
        assert origin.server_names == ["localhost"]

    async def test_a_proxy_refusing_the_tunnel_is_a_clear_503_on_every_route(
        self,
        pool_class: PoolClass,
        make_proxy: MakeProxy,
        make_gateway: Callable[..., Gateway],
        tls_origin: tuple[TLSOrigin, Upstream],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        _, server = tls_origin
        proxy = make_proxy(connect_ports=[443])
        monkeypatch.setenv("HTTPS_PROXY", proxy.url(ENCODED_CREDENTIALS))
        gateway = make_gateway(
            anthropic_base_url=f"https://localhost:{server.port}", upstream_http_client=kind_of(pool_class)
        )
        with caplog.at_level(logging.WARNING, logger="claude_gateway.upstream"):
            async with httpx.AsyncClient(
                base_url=gateway.url, headers={"x-api-key": CLIENT_KEY}, trust_env=False
            ) as client:
                relayed = await client.post(
                    "/v1/messages", content=MESSAGE, headers={"content-type": "application/json"}
                )
                chat = await client.post("/chat", json={"message": "hi"})
        assert relayed.status_code == 503
        assert relayed.json()["error"]["message"] == (
            f"Could not reach Claude API: the egress proxy {proxy.address} refused the tunnel (403)"
        )
        assert chat.status_code == 503
        assert proxy.address in chat.json()["detail"]
        logged = [r.getMessage() for r in caplog.records if r.name == "claude_gateway.upstream"]
        assert len(logged) == 2
        assert all(proxy.address in line for line in logged)
        assert "s3cr" not in caplog.text + relayed.text + chat.text
        assert server.connections == 0
