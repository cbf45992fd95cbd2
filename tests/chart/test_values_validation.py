"""Bad values stop `helm install` with a message that says what is wrong: the schema, then render-time checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.conftest import CHART, Helm


def mentions(error: str, where: str) -> bool:
    """Helm 4 names a value by JSON pointer (`/redis/mode`), Helm 3 by dotted path (`redis.mode`)."""
    return where in error or where.strip("/").replace("/", ".") in error


class TestSchema:
    def test_schema_is_strict_everywhere(self) -> None:
        schema = json.loads((CHART / "values.schema.json").read_text())
        assert schema["additionalProperties"] is False

        def walk(node: dict[str, Any], where: str) -> None:
            if where == "values.global":
                # Helm hands every subchart the whole of `global`, a parent chart's keys included.
                return
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
                for key, child in node["properties"].items():
                    walk(child, f"{where}.{key}")

        walk(schema, "values")
        for name, definition in schema["definitions"].items():
            walk(definition, f"definitions.{name}")

    def test_a_misspelt_key_is_named(self, helm: Helm) -> None:
        error = helm.template_error(values={"ingress": {"hots": [{"host": "x"}]}})
        assert "hots" in error
        assert "not allowed" in error.lower()
        assert mentions(error, "/ingress")

    def test_an_unknown_top_level_key_is_named(self, helm: Helm) -> None:
        error = helm.template_error(values={"replicaCount": 3})
        assert "replicaCount" in error
        assert "not allowed" in error.lower()

    def test_a_wrong_enum_lists_the_choices(self, helm: Helm) -> None:
        error = helm.template_error(values={"redis": {"mode": "cluster"}})
        assert mentions(error, "/redis/mode")
        assert all(choice in error for choice in ("internal", "external", "none"))

    @pytest.mark.parametrize(
        ("values", "where"),
        [
            ({"config": {"logLevel": "verbose"}}, "/config/logLevel"),
            ({"config": {"rateLimitFailMode": "maybe"}}, "/config/rateLimitFailMode"),
            ({"config": {"rateLimit": "10/minit"}}, "/config/rateLimit"),
            ({"service": {"type": "ExternalName"}}, "/service/type"),
            ({"api": {"gracefulTimeoutSeconds": "600"}}, "/api/gracefulTimeoutSeconds"),
            (
                {"api": {"resources": {"requests": {"cpu": "lots", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}},
                "cpu",
            ),
            ({"httpRoute": {"timeouts": {"request": "10 minutes", "backendRequest": "600s"}}}, "/httpRoute/timeouts"),
            ({"image": {"digest": "latest"}}, "/image/digest"),
            ({"clientKeys": {"keys": [{"name": "no key given"}]}}, "/clientKeys/keys/0"),
        ],
        ids=[
            "log-level",
            "fail-mode",
            "limit-syntax",
            "service-type",
            "string-for-int",
            "quantity",
            "duration",
            "digest",
            "client-key",
        ],
    )
    def test_bad_values_are_refused(self, helm: Helm, values: dict[str, Any], where: str) -> None:
        error = helm.template_error(values=values)
        assert "values don't meet the specifications of the schema" in error
        assert mentions(error, where)


class TestContradictions:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (
                {"anthropic": {"apiKey": "sk-ant-x", "existingSecret": "upstream"}},
                "set anthropic.apiKey or anthropic.existingSecret, not both",
            ),
            (
                {"clientKeys": {"keys": [{"name": "a", "key": "k"}], "existingSecret": "clients"}},
                "set clientKeys.keys or clientKeys.existingSecret, not both",
            ),
            ({"redis": {"mode": "external"}}, "redis.mode=external needs redis.url or redis.existingSecret"),
            (
                {"redis": {"mode": "external", "url": "redis://r:6379/0", "existingSecret": "redis"}},
                "set redis.url or redis.existingSecret, not both",
            ),
            ({"redis": {"url": "redis://r:6379/0"}}, "used only with redis.mode=external"),
            ({"redis": {"mode": "none"}}, "redis.mode=none runs jobs inside the API process"),
            (
                {"redis": {"mode": "none"}, "worker": {"enabled": False}},
                "redis.mode=none keeps rate limits and jobs in one pod's memory",
            ),
            (
                {"simulator": {"enabled": True}, "anthropic": {"baseUrl": "https://api.anthropic.com"}},
                "leave anthropic.baseUrl empty, or disable the simulator",
            ),
            (
                {"api": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}},
                "api.autoscaling.minReplicas (5) is above api.autoscaling.maxReplicas (3)",
            ),
            ({"httpRoute": {"enabled": True}}, "httpRoute.enabled needs httpRoute.parentRefs"),
            (
                {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
                "metrics.serviceMonitor and metrics.prometheusRule need metrics.enabled",
            ),
        ],
        ids=[
            "anthropic",
            "client-keys",
            "external-redis",
            "redis-twice",
            "url-not-external",
            "none-with-worker",
            "none-with-replicas",
            "simulator-and-base-url",
            "hpa-bounds",
            "route-without-parent",
            "monitor-no-metrics",
        ],
    )
    def test_render_fails_with_the_fix_in_the_message(self, helm: Helm, values: dict[str, Any], message: str) -> None:
        assert message in helm.template_error(values=values)

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (
                {"adminKeys": {"keys": ["a" * 32], "existingSecret": "admin"}},
                "set adminKeys.keys or adminKeys.existingSecret, not both",
            ),
            (
                {"prices": {"table": {"models": {}}, "existingConfigMap": "prices"}},
                "set prices.table or prices.existingConfigMap, not both",
            ),
            (
                {"egressProxy": {"httpsProxy": "http://proxy:3128", "existingSecret": "proxy"}},
                "set egressProxy.httpsProxy/httpProxy or egressProxy.existingSecret, not both",
            ),
            ({"egressProxy": {"httpProxy": "http://proxy:3128"}}, "egressProxy.httpProxy without"),
            (
                {"keda": {"enabled": True}, "api": {"autoscaling": {"enabled": True}}},
                "set api.autoscaling.enabled=false and worker.autoscaling.enabled=false",
            ),
            (
                {"keda": {"enabled": True}, "worker": {"autoscaling": {"enabled": True}}},
                "an HPA and a ScaledObject on one Deployment fight over its replicas",
            ),
            (
                {"keda": {"enabled": True, "api": {"minReplicas": 4, "maxReplicas": 2}}},
                "keda.api.minReplicas (4) is above keda.api.maxReplicas (2)",
            ),
            ({"keda": {"enabled": True}, "metrics": {"enabled": False}}, "keda.enabled reads the gateway's metrics"),
        ],
        ids=[
            "admin-keys",
            "prices",
            "proxy",
            "http-proxy-alone",
            "keda-and-api-hpa",
            "keda-and-worker-hpa",
            "keda-bounds",
            "keda-no-metrics",
        ],
    )
    def test_new_contradictions_fail_with_the_fix(self, helm: Helm, values: dict[str, Any], message: str) -> None:
        assert message in helm.template_error(values=values)


class TestHonestInstall:
    """An install that would refuse every request does not render: it says what to set instead."""

    NO_UPSTREAM = "no upstream key: set anthropic.existingSecret (or anthropic.apiKey), or simulator.enabled=true"
    NO_CLIENTS = "no client keys: set clientKeys.existingSecret (or clientKeys.keys)"

    def test_the_chart_defaults_alone_do_not_render(self, helm: Helm) -> None:
        assert self.NO_UPSTREAM in helm.template_error(bare=True)

    def test_an_upstream_without_client_keys_does_not_render(self, helm: Helm) -> None:
        for upstream in ({"anthropic": {"existingSecret": "up"}}, {"simulator": {"enabled": True}}):
            error = helm.template_error(values=upstream, bare=True)
            assert self.NO_CLIENTS in error
            assert self.NO_UPSTREAM not in error

    def test_client_keys_without_an_upstream_do_not_render(self, helm: Helm) -> None:
        error = helm.template_error(values={"clientKeys": {"existingSecret": "clients"}}, bare=True)
        assert self.NO_UPSTREAM in error

    @pytest.mark.parametrize(
        "values",
        [
            {"anthropic": {"existingSecret": "up"}, "clientKeys": {"existingSecret": "clients"}},
            {"anthropic": {"apiKey": "sk-ant-x"}, "clientKeys": {"keys": [{"name": "a", "key": "k"}]}},
            {"simulator": {"enabled": True}, "clientKeys": {"keys": [{"name": "a", "sha256": "ab" * 32}]}},
            # Keys passed as plain environment count too.
            {
                "extraEnv": [
                    {"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {"name": "up", "key": "k"}}},
                    {"name": "VALID_API_KEYS", "valueFrom": {"secretKeyRef": {"name": "clients", "key": "k"}}},
                ]
            },
        ],
        ids=["existing-secrets", "inline", "simulator", "extra-env"],
    )
    def test_each_key_source_is_enough(self, helm: Helm, values: dict[str, Any]) -> None:
        assert helm.template(values=values, bare=True).get("Deployment", "api")
