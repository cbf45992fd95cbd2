"""Secrets: the chart's own or existing ones, the keys file as a live-rotated mount, checksums that roll the pods."""

from __future__ import annotations

import base64

import yaml

from tests.chart.conftest import CI_VALUES, Helm, Manifests, container, env_of

EXISTING = CI_VALUES / "existing-secret-values.yaml"
INLINE = CI_VALUES / "inline-secrets-values.yaml"


def secret_ref(env: dict[str, object], name: str) -> dict[str, str]:
    entry = env[name]
    assert isinstance(entry, dict), f"{name} should come from a Secret"
    ref: dict[str, str] = entry["valueFrom"]["secretKeyRef"]
    return ref


def checksums(manifests: Manifests, component: str) -> dict[str, str]:
    annotations = manifests.get("Deployment", component)["spec"]["template"]["metadata"]["annotations"]
    return {key: value for key, value in annotations.items() if key.startswith("checksum/")}


class TestExistingSecrets:
    def test_upstream_key_from_the_named_secret(self, helm: Helm) -> None:
        manifests = helm.template([EXISTING])
        for component in ("api", "worker"):
            env = env_of(container(manifests.get("Deployment", component)))
            assert secret_ref(env, "ANTHROPIC_API_KEY") == {"name": "claude-gateway-upstream", "key": "api-key"}
            assert secret_ref(env, "REDIS_URL") == {"name": "claude-gateway-redis", "key": "url"}

    def test_keys_file_mounted_from_the_named_secret(self, helm: Helm) -> None:
        manifests = helm.template([EXISTING])
        deployment = manifests.get("Deployment", "api")
        env = env_of(container(deployment))
        assert env["API_KEYS_FILE"] == "/etc/claude-gateway/keys/clients.yaml"
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "client-keys")
        assert volume["secret"]["secretName"] == "claude-gateway-client-keys"
        assert volume["secret"]["items"] == [{"key": "clients.yaml", "path": "clients.yaml"}]

    def test_the_chart_makes_no_secret_of_its_own(self, helm: Helm) -> None:
        assert helm.template([EXISTING]).all("Secret") == []


class TestInlineSecrets:
    def test_upstream_key_and_redis_url_in_the_chart_secret(self, helm: Helm) -> None:
        manifests = helm.template([INLINE])
        secret = next(s for s in manifests.all("Secret") if "ANTHROPIC_API_KEY" in s.get("data", {}))
        decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        assert decoded == {
            "ANTHROPIC_API_KEY": "sk-ant-not-a-real-key",
            "REDIS_URL": "rediss://:not-a-real-password@redis.example.internal:6380/0",
        }
        env = env_of(container(manifests.get("Deployment", "api")))
        assert secret_ref(env, "ANTHROPIC_API_KEY") == {"name": secret["metadata"]["name"], "key": "ANTHROPIC_API_KEY"}

    def test_keys_file_holds_the_client_keys(self, helm: Helm) -> None:
        manifests = helm.template([INLINE])
        secret = next(s for s in manifests.all("Secret") if "keys.yaml" in s.get("stringData", {}))
        keys = yaml.safe_load(secret["stringData"]["keys.yaml"])["keys"]
        assert [key["name"] for key in keys] == ["team-search", "team-support"]
        assert keys[0]["rate_limit"] == "100/minute"
        assert "sha256" in keys[1]

    def test_no_secret_in_the_configmap(self, helm: Helm) -> None:
        data = helm.template([INLINE]).get("ConfigMap")["data"]
        text = yaml.safe_dump(data)
        for secret in ("sk-ant-not-a-real-key", "not-a-real-password", "cg-search-not-a-real-key"):
            assert secret not in text


class TestRotation:
    def test_keys_file_is_a_directory_mount_not_subpath(self, helm: Helm) -> None:
        # subPath mounts never see a Secret's updates; a directory mount does, so rotation needs no restart.
        deployment = helm.template([INLINE]).get("Deployment", "api")
        mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "client-keys")
        assert "subPath" not in mount
        assert mount["readOnly"] is True

    def test_rotating_client_keys_does_not_roll_the_pods(self, helm: Helm) -> None:
        before = helm.template(values={"clientKeys": {"keys": [{"name": "a", "key": "one"}], "existingSecret": ""}})
        after = helm.template(values={"clientKeys": {"keys": [{"name": "a", "key": "two"}], "existingSecret": ""}})
        assert checksums(before, "api") == checksums(after, "api")

    def test_a_settings_change_rolls_both_deployments(self, helm: Helm, default_render: Manifests) -> None:
        changed = helm.template(values={"config": {"rateLimit": "20/minute"}})
        for component in ("api", "worker"):
            assert (
                checksums(default_render, component)["checksum/config"]
                != checksums(changed, component)["checksum/config"]
            )

    def test_an_upstream_key_change_rolls_the_pods(self, helm: Helm) -> None:
        one = helm.template(values={"anthropic": {"apiKey": "sk-ant-one", "existingSecret": ""}})
        two = helm.template(values={"anthropic": {"apiKey": "sk-ant-two", "existingSecret": ""}})
        assert checksums(one, "api")["checksum/secret"] != checksums(two, "api")["checksum/secret"]

    def test_the_exclusion_is_explained(self) -> None:
        from tests.chart.conftest import CHART

        template = (CHART / "templates" / "keys-secret.yaml").read_text()
        assert "left out of the Deployments' checksum annotations on purpose" in template
        assert "rotation is live" in template


def test_with_existing_secrets_the_only_chart_secret_is_the_redis_password(default_render: Manifests) -> None:
    (secret,) = default_render.all("Secret")
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    assert set(secret["data"]) == {"redis-password"}
    env = env_of(container(default_render.get("Deployment", "api")))
    assert secret_ref(env, "ANTHROPIC_API_KEY") == {"name": "claude-gateway-upstream", "key": "ANTHROPIC_API_KEY"}
