"""The environment the chart gives the gateway is what the gateway reads: its real Settings accept it."""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from claude_gateway.settings import Settings, load_settings
from tests.chart.conftest import CI_VALUES, KIND_VALUES, Helm, Manifests, all_features_values, container

# Read by the OpenTelemetry SDK itself, not by Settings.
OTEL_SDK_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"}
# Read by `claude-gateway serve` (claude_gateway.server.gunicorn) and prometheus-client, not by Settings.
SERVER_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR"}
# The downward-API helpers OTEL_RESOURCE_ATTRIBUTES refers to, and the internal Redis's password, which the kubelet
# composes into REDIS_URL.
POD_VARIABLES = {"POD_NAME", "POD_NAMESPACE", "INTERNAL_REDIS_PASSWORD"}
# Read by httpx from the environment (trust_env), as curl reads them: the egress proxy.
PROXY_VARIABLES = {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"}
# PENDING: settings the chart already renders that other engineers are adding to Settings in this same session
# (issues 14 and 15), under exactly these names: remove each once settings.py has it. Any other name the gateway
# does not read still fails.
PENDING_SETTINGS: set[str] = set()
SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}
KNOWN_VARIABLES = SETTINGS_VARIABLES | PENDING_SETTINGS | OTEL_SDK_VARIABLES | POD_VARIABLES | SERVER_VARIABLES
KNOWN_VARIABLES |= PROXY_VARIABLES
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def mount_prices(manifests: Manifests, env: dict[str, str], directory: Path) -> None:
    """Put the chart's price table where PRICES_FILE says, as the kubelet's ConfigMap mount would (under
    `directory`); an existing ConfigMap's content is not in the render, so its PRICES_FILE is left out."""
    if "PRICES_FILE" not in env:
        return
    deployment = manifests.get("Deployment", "api")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "prices")
    config = next((c for c in manifests.all("ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"]), None)
    if config is None:
        del env["PRICES_FILE"]
        return
    path = directory / Path(env["PRICES_FILE"]).name
    path.write_text(config["data"][path.name])
    env["PRICES_FILE"] = str(path)


def environment(manifests: Manifests, component: str) -> dict[str, str]:
    """What the container's process sees: the ConfigMap, literal values, and the chart's own Secrets."""
    item = container(manifests.get("Deployment", component))
    config = manifests.get("ConfigMap")
    secrets = {
        secret["metadata"]["name"]: {
            **{key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()},
            **secret.get("stringData", {}),
        }
        for secret in manifests.all("Secret")
    }
    env: dict[str, str] = dict(config["data"])
    for entry in item["env"]:
        if "value" in entry:
            # `$(NAME)` refers to a variable defined above it, which the kubelet substitutes.
            env[entry["name"]] = _REFERENCE.sub(lambda match: env.get(match[1], match[0]), entry["value"])
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets.get(ref["name"], {}).get(ref["key"], f"<from {ref['name']}>")
    return env


def scenarios(helm: Helm) -> dict[str, Manifests]:
    files, values = all_features_values()
    return {
        "default": helm.template(),
        "inline-secrets": helm.template([CI_VALUES / "inline-secrets-values.yaml"]),
        "existing-secrets": helm.template([CI_VALUES / "existing-secret-values.yaml"]),
        "spend-and-proxy": helm.template([CI_VALUES / "spend-and-proxy-values.yaml"]),
        "inline-proxy": helm.template(
            values={"egressProxy": {"httpsProxy": "http://u:p@proxy.corp:3128"}, "adminKeys": {"keys": ["a" * 32]}}
        ),
        "all-features": helm.template(files, values),
        "kind": helm.template([KIND_VALUES]),
    }


@pytest.mark.parametrize("component", ["api", "worker"])
def test_every_variable_is_one_the_gateway_reads(helm: Helm, component: str) -> None:
    for name, manifests in scenarios(helm).items():
        env = environment(manifests, component)
        unknown = set(env) - KNOWN_VARIABLES
        assert not unknown, f"{name}: {sorted(unknown)}"


def test_an_unknown_variable_is_caught(helm: Helm) -> None:
    manifests = helm.template(values={"api": {"extraEnv": [{"name": "RATE_LIMITS", "value": "1/second"}]}})
    assert set(environment(manifests, "api")) - KNOWN_VARIABLES == {"RATE_LIMITS"}


@pytest.mark.parametrize("component", ["api", "worker"])
def test_the_gateway_settings_accept_the_environment(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, component: str
) -> None:
    for name, manifests in scenarios(helm).items():
        env = environment(manifests, component)
        mount_prices(manifests, env, tmp_path)
        for variable in SETTINGS_VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        for key, value in env.items():
            # Only what Settings reads (OTel's and prometheus-client's variables stay out of this process), and not
            # an existing Secret's content, which the render does not have.
            if key in SETTINGS_VARIABLES and not value.startswith("<from "):
                monkeypatch.setenv(key, value)
        settings = load_settings()
        # The API serves the app on 8000 and its metrics on METRICS_PORT; the worker only its metrics, there too.
        expected: dict[str, Any] = {"metrics_enabled": True, "metrics_port": int(env["METRICS_PORT"])}
        if component == "api":
            expected["port"] = 8000
        expected["forwarded_allow_ips"] = env["FORWARDED_ALLOW_IPS"].split(",")
        if component == "api":
            expected["graceful_timeout_s"] = float(env["GRACEFUL_TIMEOUT_S"])
        for field, value in expected.items():
            assert getattr(settings, field) == value, (name, field)
        known_redis = "REDIS_URL" in env and not env["REDIS_URL"].startswith("<from ")
        assert settings.uses_redis == known_redis, name
        if "PRICES_FILE" in env:
            # The gateway's own loader read the chart's table, as it does at start.
            assert settings.prices_file is not None, name
            price = settings.price_table.price("claude-sonnet-4-6-20260101")
            assert price is not None, name
            assert (price.input, price.output) == (Decimal(3), Decimal(15)), name


def test_the_simulator_is_the_upstream_when_enabled(helm: Helm) -> None:
    manifests = helm.template([CI_VALUES / "simulator-values.yaml"])
    env = environment(manifests, "api")
    simulator = manifests.get("Service", "simulator")
    assert env["ANTHROPIC_BASE_URL"] == f"http://{simulator['metadata']['name']}:8001"
    assert env["ANTHROPIC_API_KEY"]
    args = container(manifests.get("Deployment", "simulator"))["args"]
    assert args[:5] == ["simulate", "--host", "0.0.0.0", "--port", "8001"]
