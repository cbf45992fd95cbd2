"""The egress proxy, configured as curl and httpx read it from the environment.

- `HTTPS_PROXY` for https:// upstreams (tunnelled with CONNECT), `HTTP_PROXY` for http:// ones (absolute-form
  requests), `ALL_PROXY` for either when its own is unset. The lower-case spelling wins over the upper-case one, as
  in curl and urllib; an empty value counts as unset. A URL without a scheme is http://; only http:// proxies are
  supported (no TLS to the proxy, no SOCKS), and a port left out is 80, as in httpx.
- Credentials come from the URL's userinfo (percent-decoded) and go to the proxy as `Proxy-Authorization: Basic`.
  They are kept out of every repr and message: a proxy is named by `address` (host:port) only.
- `NO_PROXY` follows curl: a comma- (or space-) separated list; `*` alone bypasses the proxy for every host; a name
  matches itself and its subdomains, with or without a leading dot (`example.com` and `.example.com` both match
  `example.com` and `api.example.com`, never `notexample.com`); IP addresses and CIDR blocks (`10.0.0.0/8`, `::1`)
  match the upstream's address when it is given as one. Beyond curl: `host:port` matches that port only (as
  urllib's `proxy_bypass` does) and `*.example.com` is read as `.example.com`.

The gateway reads the environment once, at start-up: `load_settings` fails on a bad value with one line naming the
variable, and the upstream connection pool reads it when it is made (once per process).
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressConfigError(ValueError):
    """A proxy variable that cannot be used; the message names it and never shows credentials."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where it listens, and the `Proxy-Authorization` value its URL's credentials make."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """`host:port`, the only way a proxy is named in logs and errors."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NoProxy:
    """The hosts reached directly (curl's `NO_PROXY` rules, see the module's docstring)."""

    everything: bool = False
    # (name without leading or trailing dots, port or None for any)
    names: tuple[tuple[str, int | None], ...] = ()
    networks: tuple[tuple[IPNetwork, int | None], ...] = ()

    @classmethod
    def parse(cls, value: str, variable: str = "NO_PROXY") -> NoProxy:
        names: list[tuple[str, int | None]] = []
        networks: list[tuple[IPNetwork, int | None]] = []
        for raw in value.replace(" ", ",").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(everything=True)
            entry = entry.split("://", 1)[-1]  # httpx accepts `http://host`; the scheme does not narrow it here
            host, port = _split_port(entry, variable)
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
                continue
            except ValueError:
                if "/" in host or host.count(":") > 1:
                    raise EgressConfigError(f"{variable}: {raw.strip()!r} is not an IP address or CIDR block") from None
            name = host.removeprefix("*").strip(".")
            if name:
                names.append((name, port))
        return cls(names=tuple(names), networks=tuple(networks))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().strip("[]").rstrip(".")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            for network, only_port in self.networks:
                if address in network and only_port in (None, port):
                    return True
        for name, only_port in self.names:
            if (host == name or host.endswith("." + name)) and only_port in (None, port):
                return True
        return False


@dataclass(frozen=True, slots=True)
class EgressProxies:
    """Which proxy, if any, each upstream URL goes through."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: NoProxy = field(default_factory=NoProxy)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> EgressProxies:
        """The process's proxies; `EgressConfigError` names a variable that cannot be used."""
        env = os.environ if environ is None else environ
        every = _first(env, "all_proxy")
        no_proxy = _first(env, "no_proxy")
        return cls(
            http=_proxy(_first(env, "http_proxy") or every),
            https=_proxy(_first(env, "https_proxy") or every),
            no_proxy=NoProxy.parse(no_proxy[1], no_proxy[0]) if no_proxy else NoProxy(),
        )

    def for_url(self, url: str) -> Proxy | None:
        """The proxy `url` goes through; None to connect directly."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http if parts.scheme == "http" else None
        if proxy is None or not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return None if self.no_proxy.matches(parts.hostname, port) else proxy


# Connect directly, whatever the environment says.
DIRECT = EgressProxies()


def _first(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(variable, value) of the first non-empty of `name` and `NAME`, lower case first as curl and urllib read it."""
    for variable in (name, name.upper()):
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _proxy(setting: tuple[str, str] | None) -> Proxy | None:
    """The proxy of a (variable, value) pair, or None when the variable is unset."""
    if setting is None:
        return None
    variable, value = setting
    parts = urlsplit(value if "://" in value else f"http://{value}")
    shown = _without_credentials(value)
    if parts.scheme != "http":
        raise EgressConfigError(f"{variable}: {shown!r}: only http:// proxies are supported")
    try:
        port = parts.port or 80
    except ValueError:
        raise EgressConfigError(f"{variable}: {shown!r} has no valid port") from None
    if not parts.hostname:
        raise EgressConfigError(f"{variable}: {shown!r} names no host (expected e.g. http://proxy.internal:3128)")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Proxy(parts.hostname, port, authorization)


def _without_credentials(value: str) -> str:
    scheme, _, rest = value.rpartition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}://{netloc}{slash}{path}" if scheme else f"{netloc}{slash}{path}"


def _split_port(entry: str, variable: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, or a bare host, IPv6 address or CIDR block (whose colons are not a port's)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        return entry, None
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EgressConfigError(f"{variable}: {entry!r} has no valid port")
    return host, int(port)
