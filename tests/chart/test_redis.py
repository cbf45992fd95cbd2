"""The internal Redis (Valkey): an upgrade of the gateway leaves it running, its password is made once and kept,
persistence, its own budget, memory and eviction policy; external Redis as the production choice."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CI_VALUES, MINIMAL_VALUES, NAMESPACE, RELEASE, Helm, Manifests, container, env_of
from tests.chart.kube_stub import KubeStub

SECRET_NAME = f"{RELEASE}-claude-gateway-redis"


def pod_template(manifests: Manifests) -> dict[str, Any]:
    template: dict[str, Any] = manifests.get("Deployment", "redis")["spec"]["template"]
    return template


def arguments(manifests: Manifests) -> dict[str, str]:
    args = container(manifests.get("Deployment", "redis"))["args"]
    return dict(zip(args[::2], args[1::2], strict=True))


def password(manifests: Manifests) -> str:
    (secret,) = [item for item in manifests.all("Secret") if item["metadata"]["name"] == SECRET_NAME]
    return base64.b64decode(secret["data"]["redis-password"]).decode()


class TestImage:
    def test_valkey_by_default_pinned_to_a_version(self, default_render: Manifests) -> None:
        image = container(default_render.get("Deployment", "redis"))["image"]
        repository, tag = image.rsplit(":", 1)
        assert repository == "docker.io/valkey/valkey"
        assert tag[0].isdigit()
        assert tag.split(".")[0] == "8"

    def test_a_digest_pins_it(self, helm: Helm) -> None:
        digest = "sha256:" + "cd" * 32
        manifests = helm.template(values={"redis": {"internal": {"image": {"digest": digest}}}})
        assert container(manifests.get("Deployment", "redis"))["image"] == f"docker.io/valkey/valkey@{digest}"


class TestUpgradeLeavesRedisAlone:
    @pytest.mark.parametrize(
        "change",
        [
            {"image": {"tag": "9.9.9"}},
            {"config": {"rateLimit": "99/minute"}, "api": {"replicaCount": 4}},
            {"anthropic": {"existingSecret": "another-upstream"}},
        ],
        ids=["image-tag", "settings", "secret"],
    )
    def test_the_pod_template_is_byte_identical(self, helm: Helm, change: dict[str, Any]) -> None:
        before = helm.run(*helm.template_args(), "--show-only", "templates/redis.yaml").stdout
        after = helm.run(*helm.template_args(values=change), "--show-only", "templates/redis.yaml").stdout

        def template_text(output: str) -> str:
            deployment = next(doc for doc in yaml.safe_load_all(output) if doc and doc["kind"] == "Deployment")
            return yaml.safe_dump(deployment["spec"]["template"])

        assert template_text(after) == template_text(before)

    def test_only_selector_and_component_labels_on_the_pod(self, default_render: Manifests) -> None:
        labels = pod_template(default_render)["metadata"]["labels"]
        assert labels == {
            "app.kubernetes.io/name": "claude-gateway",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "redis",
        }
        assert "annotations" not in pod_template(default_render)["metadata"]

    def test_the_gateway_pods_do_carry_the_version(self, helm: Helm) -> None:
        # The contrast: the gateway's own pods roll on an upgrade, as they must.
        manifests = helm.template(values={"image": {"tag": "9.9.9"}})
        labels = manifests.get("Deployment", "api")["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/version"] == "9.9.9"


class TestPassword:
    def test_the_server_requires_it_and_never_sees_it_on_its_command_line(self, default_render: Manifests) -> None:
        redis = container(default_render.get("Deployment", "redis"))
        env = env_of(redis)
        assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "redis-password"}
        script = redis["command"][2]
        assert "requirepass" in script
        assert "exec valkey-server /run/valkey/auth.conf" in script
        assert "--requirepass" not in redis["args"]
        # The probes authenticate through the environment, not through an argument.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = " ".join(redis[probe]["exec"]["command"])
            assert "valkey-cli" in command
            assert " -a " not in command

    def test_the_gateway_url_carries_it_from_the_secret(self, default_render: Manifests) -> None:
        for component in ("api", "worker"):
            entries = container(default_render.get("Deployment", component))["env"]
            names = [entry["name"] for entry in entries]
            password_entry = entries[names.index("INTERNAL_REDIS_PASSWORD")]
            assert password_entry["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "redis-password"}
            url = entries[names.index("REDIS_URL")]["value"]
            assert url == f"redis://:$(INTERNAL_REDIS_PASSWORD)@{SECRET_NAME}:6379/0"
            # The kubelet substitutes $(NAME) only from variables defined before.
            assert names.index("INTERNAL_REDIS_PASSWORD") < names.index("REDIS_URL")
        config = yaml.safe_dump(default_render.get("ConfigMap")["data"])
        assert "REDIS_URL" not in config
        assert password(default_render) not in config

    def test_a_random_password_of_letters_and_digits(self, default_render: Manifests) -> None:
        value = password(default_render)
        assert len(value) == 32
        assert value.isalnum()

    def test_an_existing_secret_replaces_the_chart_one(self, helm: Helm) -> None:
        manifests = helm.template([CI_VALUES / "redis-persistence-values.yaml"])
        assert [item for item in manifests.all("Secret") if item["metadata"]["name"] == SECRET_NAME] == []
        env = env_of(container(manifests.get("Deployment", "redis")))
        assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == {
            "name": "claude-gateway-valkey",
            "key": "redis-password",
        }
        api = env_of(container(manifests.get("Deployment", "api")))
        assert api["INTERNAL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "claude-gateway-valkey"


class TestPasswordKeptAcrossUpgrades:
    """`lookup` answered by a stand-in API server over a real socket (tests/chart/kube_stub.py)."""

    def render_against(self, helm: Helm, stub: KubeStub, tmp_path: Path, *extra: str) -> Manifests:
        with stub.serving(tmp_path) as kubeconfig:
            output = helm.run(
                *helm.template_args(),
                "--dry-run=server",
                "--disable-openapi-validation",
                *extra,
                env={"KUBECONFIG": str(kubeconfig)},
            ).stdout
        return Manifests(tuple(doc for doc in yaml.safe_load_all(output) if doc))

    def stub_for(self, manifests: Manifests) -> KubeStub:
        return KubeStub({(doc["apiVersion"], doc["kind"]) for doc in manifests.docs})

    def test_an_upgrade_writes_back_the_password_it_finds(
        self, helm: Helm, default_render: Manifests, tmp_path: Path
    ) -> None:
        stub = self.stub_for(default_render)
        first = self.render_against(helm, stub, tmp_path)
        installed = password(first)
        assert len(installed) == 32
        # The install is in the cluster now: the next render (an upgrade with a new image) finds its Secret.
        encoded = base64.b64encode(installed.encode()).decode()
        stub.add_secret(NAMESPACE, SECRET_NAME, {"redis-password": encoded}, release=RELEASE)
        second = self.render_against(helm, stub, tmp_path, "--set", "image.tag=9.9.9")
        third = self.render_against(helm, stub, tmp_path, "--set", "config.rateLimit=5/minute")
        assert password(second) == installed
        assert password(third) == installed
        assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET_NAME}" in stub.requests
        assert yaml.safe_dump(pod_template(second)) == yaml.safe_dump(pod_template(first))

    def test_without_the_secret_a_new_password_is_made(
        self, helm: Helm, default_render: Manifests, tmp_path: Path
    ) -> None:
        stub = self.stub_for(default_render)
        one = password(self.render_against(helm, stub, tmp_path))
        two = password(self.render_against(helm, stub, tmp_path))
        assert one != two

    def test_an_existing_password_of_another_shape_is_kept_as_it_is(
        self, helm: Helm, default_render: Manifests, tmp_path: Path
    ) -> None:
        stub = self.stub_for(default_render)
        encoded = base64.b64encode(b"set-by-hand-2024").decode()
        stub.add_secret(NAMESPACE, SECRET_NAME, {"redis-password": encoded}, release=RELEASE)
        assert password(self.render_against(helm, stub, tmp_path)) == "set-by-hand-2024"


class TestMemory:
    def test_maxmemory_and_noeviction_by_default(self, default_render: Manifests) -> None:
        args = arguments(default_render)
        assert args["--maxmemory"] == "256mb"
        assert args["--maxmemory-policy"] == "noeviction"

    def test_the_limit_leaves_room_above_maxmemory(self, default_render: Manifests) -> None:
        limit = container(default_render.get("Deployment", "redis"))["resources"]["limits"]["memory"]
        assert limit.endswith("Mi")
        assert int(limit[:-2]) >= 1.4 * 256

    def test_values_set_them(self, helm: Helm) -> None:
        manifests = helm.template(
            values={"redis": {"internal": {"maxMemory": "1gb", "maxMemoryPolicy": "volatile-ttl"}}}
        )
        args = arguments(manifests)
        assert (args["--maxmemory"], args["--maxmemory-policy"]) == ("1gb", "volatile-ttl")
        assert "maxMemoryPolicy" in helm.template_error(values={"redis": {"internal": {"maxMemoryPolicy": "lru"}}})

    def test_the_policy_is_explained_at_the_value(self) -> None:
        text = (CI_VALUES.parent / "values.yaml").read_text()
        block = text[: text.index("    maxMemoryPolicy:")].rsplit("# --", 1)[1]
        assert "noeviction" in block
        assert "refuses new" in block


class TestPersistence:
    def test_off_by_default_nothing_on_disk(self, default_render: Manifests) -> None:
        args = arguments(default_render)
        assert args["--appendonly"] == "no"
        assert args["--save"] == ""
        assert default_render.all("PersistentVolumeClaim") == []
        volumes = {v["name"]: v for v in pod_template(default_render)["spec"]["volumes"]}
        assert "emptyDir" in volumes["data"]

    def test_a_claim_and_the_append_only_file(self, helm: Helm) -> None:
        manifests = helm.template([CI_VALUES / "redis-persistence-values.yaml"])
        args = arguments(manifests)
        assert args["--appendonly"] == "yes"
        assert args["--appendfsync"] == "everysec"
        (claim,) = manifests.all("PersistentVolumeClaim")
        assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
        assert claim["spec"]["storageClassName"] == "fast-ssd"
        volumes = {v["name"]: v for v in pod_template(manifests)["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert manifests.get("Deployment", "redis")["spec"]["strategy"] == {"type": "Recreate"}

    def test_an_existing_claim(self, helm: Helm) -> None:
        values = {"redis": {"internal": {"persistence": {"enabled": True, "existingClaim": "valkey-data"}}}}
        manifests = helm.template(values=values)
        assert manifests.all("PersistentVolumeClaim") == []
        volumes = {v["name"]: v for v in pod_template(manifests)["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "valkey-data"


class TestDisruptionBudget:
    def test_its_own_budget(self, default_render: Manifests, helm: Helm) -> None:
        pdb = default_render.get("PodDisruptionBudget", "redis")
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        held = helm.template(values={"redis": {"internal": {"podDisruptionBudget": {"maxUnavailable": 0}}}})
        assert held.get("PodDisruptionBudget", "redis")["spec"]["maxUnavailable"] == 0
        off = helm.template(values={"redis": {"internal": {"podDisruptionBudget": {"enabled": False}}}})
        assert off.find("PodDisruptionBudget", "redis") is None

    def test_every_budget_lets_unhealthy_pods_go(self, helm: Helm) -> None:
        manifests = helm.template([CI_VALUES / "autoscaling-values.yaml"])
        budgets = manifests.all("PodDisruptionBudget")
        assert {pdb["metadata"]["labels"]["app.kubernetes.io/component"] for pdb in budgets} == {
            "api",
            "worker",
            "redis",
        }
        assert all(pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" for pdb in budgets)


class TestExternal:
    def test_tls_url_from_a_secret_and_no_redis_of_ours(self, helm: Helm) -> None:
        manifests = helm.template([CI_VALUES / "external-redis-tls-values.yaml"])
        assert manifests.find("Deployment", "redis") is None
        assert manifests.find("Service", "redis") is None
        assert manifests.find("PodDisruptionBudget", "redis") is None
        assert manifests.all("Secret") == []
        for component in ("api", "worker"):
            env = env_of(container(manifests.get("Deployment", component)))
            assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "claude-gateway-redis", "key": "url"}
            assert "INTERNAL_REDIS_PASSWORD" not in env

    def test_the_readme_documents_it_as_the_production_choice(self) -> None:
        readme = (CI_VALUES.parent / "README.md").read_text()
        section = readme[readme.index("### Redis") :]
        for needle in ("rediss://", "production", "AUTH", "### Sizing Redis"):
            assert needle in section, needle


def test_the_minimal_values_are_the_defaults_plus_two_secrets() -> None:
    values = yaml.safe_load(MINIMAL_VALUES.read_text())
    assert json.dumps(values, sort_keys=True) == json.dumps(
        {
            "anthropic": {"existingSecret": "claude-gateway-upstream"},
            "clientKeys": {"existingSecret": "claude-gateway-client-keys"},
        },
        sort_keys=True,
    )
