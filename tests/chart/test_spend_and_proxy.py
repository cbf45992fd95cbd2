"""Spend control and egress values: the price table as a mounted file, budgets, the output reservation, the
count_tokens limit, admin keys from a Secret, and the egress proxy, whose URL may hold credentials."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CI_VALUES, Helm, Manifests, container, env_of

SPEND = CI_VALUES / "spend-and-proxy-values.yaml"


@pytest.fixture(scope="module")
def spend(helm: Helm) -> Manifests:
    return helm.template([SPEND])


def secret_data(manifests: Manifests, name: str) -> dict[str, str]:
    secret = next(item for item in manifests.all("Secret") if item["metadata"]["name"] == name)
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


class TestPrices:
    def test_the_table_is_a_mounted_json_file(self, spend: Manifests) -> None:
        table = yaml.safe_load(SPEND.read_text())["prices"]["table"]
        config = next(item for item in spend.all("ConfigMap") if item["metadata"]["name"].endswith("-prices"))
        assert json.loads(config["data"]["prices.json"]) == table
        for component in ("api", "worker"):
            deployment = spend.get("Deployment", component)
            main = container(deployment)
            assert env_of(main)["PRICES_FILE"] == "/etc/claude-gateway/prices/prices.json"
            mount = next(m for m in main["volumeMounts"] if m["name"] == "prices")
            assert mount == {"name": "prices", "mountPath": "/etc/claude-gateway/prices", "readOnly": True}
            volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "prices")
            assert volume["configMap"]["name"] == config["metadata"]["name"]

    def test_an_existing_config_map(self, helm: Helm) -> None:
        values = {"prices": {"existingConfigMap": "org-prices", "existingConfigMapKey": "table.yaml"}}
        manifests = helm.template(values=values)
        main = container(manifests.get("Deployment", "api"))
        assert env_of(main)["PRICES_FILE"] == "/etc/claude-gateway/prices/table.yaml"
        volume = next(
            v
            for v in manifests.get("Deployment", "api")["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "prices"
        )
        assert volume["configMap"] == {"name": "org-prices", "items": [{"key": "table.yaml", "path": "table.yaml"}]}

    def test_a_price_change_rolls_the_pods(self, helm: Helm) -> None:
        def checksum(price: float) -> str:
            values = {"prices": {"table": {"models": {"claude-sonnet-4-6": {"input": price}}}}}
            annotations = helm.template(values=values).get("Deployment", "api")["spec"]["template"]["metadata"]
            return str(annotations["annotations"]["checksum/prices"])

        assert checksum(3) != checksum(4)

    def test_none_by_default(self, default_render: Manifests) -> None:
        assert "PRICES_FILE" not in env_of(container(default_render.get("Deployment", "api")))


class TestLimitsAndBudgets:
    def test_set_values_reach_the_config_map(self, spend: Manifests) -> None:
        data = spend.get("ConfigMap")["data"]
        assert data["BUDGET_USD_DAY"] == "20"
        assert data["BUDGET_USD_MONTH"] == "400"
        assert data["TOKEN_RESERVE_OUTPUT"] == "4096"
        assert data["COUNT_TOKENS_RATE_LIMIT"] == "100/minute"
        assert data["MODELS_RATE_LIMIT"] == "100/minute"
        assert data["JOBS_MAX_QUEUED_BYTES_PER_CLIENT"] == "8388608"

    def test_unset_values_leave_the_gateway_defaults(self, default_render: Manifests) -> None:
        data = default_render.get("ConfigMap")["data"]
        unset = (
            "BUDGET_USD_DAY",
            "BUDGET_USD_MONTH",
            "TOKEN_RESERVE_OUTPUT",
            "COUNT_TOKENS_RATE_LIMIT",
            "MODELS_RATE_LIMIT",
            "JOBS_MAX_QUEUED_BYTES_PER_CLIENT",
        )
        for name in unset:
            assert name not in data, name

    def test_a_fractional_budget_is_kept(self, helm: Helm) -> None:
        data = helm.template(values={"config": {"budgetUsdDay": 0.05}}).get("ConfigMap")["data"]
        assert data["BUDGET_USD_DAY"] == "0.05"

    @pytest.mark.parametrize(
        ("values", "where"),
        [
            ({"config": {"budgetUsdDay": -1}}, "budgetUsdDay"),
            ({"config": {"tokenReserveOutput": 0}}, "tokenReserveOutput"),
            ({"config": {"countTokensRateLimit": "lots"}}, "countTokensRateLimit"),
            ({"config": {"forwardedAllowIps": ["ingress-nginx"]}}, "forwardedAllowIps"),
        ],
        ids=["budget", "reserve", "limit", "forwarded"],
    )
    def test_bad_values_are_refused(self, helm: Helm, values: dict[str, Any], where: str) -> None:
        assert where in helm.template_error(values=values)


class TestAdminKeys:
    def test_from_an_existing_secret_on_the_api_only(self, spend: Manifests) -> None:
        api = env_of(container(spend.get("Deployment", "api")))
        assert api["ADMIN_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
            "name": "claude-gateway-admin",
            "key": "ADMIN_API_KEYS",
        }
        assert "ADMIN_API_KEYS" not in env_of(container(spend.get("Deployment", "worker")))

    def test_inline_keys_go_to_a_secret_never_the_config_map(self, helm: Helm) -> None:
        keys = ["admin-" + "a" * 26, "admin-" + "b" * 26]
        manifests = helm.template(values={"adminKeys": {"keys": keys}})
        api = env_of(container(manifests.get("Deployment", "api")))
        ref = api["ADMIN_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert secret_data(manifests, ref["name"])[ref["key"]] == ",".join(keys)
        assert keys[0] not in yaml.safe_dump(manifests.get("ConfigMap")["data"])


class TestEgressProxy:
    def test_from_an_existing_secret(self, spend: Manifests) -> None:
        for component in ("api", "worker"):
            env = env_of(container(spend.get("Deployment", component)))
            assert env["HTTPS_PROXY"]["valueFrom"]["secretKeyRef"] == {
                "name": "claude-gateway-proxy",
                "key": "HTTPS_PROXY",
            }
            assert env["HTTP_PROXY"]["valueFrom"]["secretKeyRef"]["optional"] is True

    def test_no_proxy_keeps_in_cluster_traffic_direct(self, spend: Manifests) -> None:
        no_proxy = spend.get("ConfigMap")["data"]["NO_PROXY"].split(",")
        redis = spend.get("Service", "redis")["metadata"]["name"]
        assert {"localhost", "127.0.0.1", ".svc", ".cluster.local", redis, "otel-collector.observability"} <= set(
            no_proxy
        )

    def test_credentials_in_the_url_stay_in_a_secret(self, helm: Helm) -> None:
        url = "http://gateway:s3cret@proxy.corp:3128"
        manifests = helm.template(values={"egressProxy": {"httpsProxy": url}})
        env = env_of(container(manifests.get("Deployment", "api")))
        ref = env["HTTPS_PROXY"]["valueFrom"]["secretKeyRef"]
        assert secret_data(manifests, ref["name"])["HTTPS_PROXY"] == url
        assert "HTTP_PROXY" not in env
        assert "s3cret" not in yaml.safe_dump(manifests.get("ConfigMap")["data"])

    def test_no_proxy_variables_without_a_proxy(self, default_render: Manifests) -> None:
        env = env_of(container(default_render.get("Deployment", "api")))
        assert not {"HTTPS_PROXY", "HTTP_PROXY"} & set(env)
        assert "NO_PROXY" not in default_render.get("ConfigMap")["data"]
