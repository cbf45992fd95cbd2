"""Escape hatches per component, extraObjects through `tpl`, and global.imageRegistry / imagePullSecrets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import CI_VALUES, RELEASE, Helm, Manifests, container, env_of

HATCHES = CI_VALUES / "escape-hatches-values.yaml"
COMPONENTS = ("api", "worker", "redis", "simulator")


def pod(manifests: Manifests, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests.get("Deployment", component)["spec"]["template"]["spec"]
    return spec


def everything(component: str) -> dict[str, Any]:
    """Every hatch of one component set to something recognisable."""
    return {
        "podLabels": {"hatch": component},
        "podAnnotations": {"example.com/hatch": component},
        "deploymentAnnotations": {"example.com/owner": component},
        "extraEnv": [{"name": "HATCH", "value": "{{ .Release.Name }}"}],
        "extraEnvFrom": [{"secretRef": {"name": "hatch-env"}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
        "initContainers": [{"name": "init", "image": "busybox:1.37", "command": ["true"]}],
        "sidecars": [{"name": "shipper", "image": "fluent/fluent-bit:4.0"}],
        "lifecycle": {"postStart": {"exec": {"command": ["true"]}}},
        "hostAliases": [{"ip": "10.0.0.10", "hostnames": ["proxy.corp"]}],
        "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]},
        "priorityClassName": "high",
        "runtimeClassName": "gvisor",
    }


@pytest.fixture(scope="module")
def hatched(helm: Helm) -> Manifests:
    values: dict[str, Any] = {name: everything(name) for name in ("api", "worker", "simulator")}
    values["redis"] = {"internal": everything("redis")}
    values["simulator"]["enabled"] = True
    return helm.template(values=values)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_hatch_lands_on_its_component(hatched: Manifests, component: str) -> None:
    deployment = hatched.get("Deployment", component)
    template = deployment["spec"]["template"]
    spec = template["spec"]
    main = spec["containers"][0]
    assert deployment["metadata"]["annotations"] == {"example.com/owner": component}
    assert template["metadata"]["labels"]["hatch"] == component
    assert template["metadata"]["annotations"]["example.com/hatch"] == component
    assert env_of(main)["HATCH"] == RELEASE  # through tpl
    assert {"secretRef": {"name": "hatch-env"}} in main["envFrom"]
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in spec["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in main["volumeMounts"]
    assert [item["name"] for item in spec["initContainers"]] == ["init"]
    assert [item["name"] for item in spec["containers"]][1:] == ["shipper"]
    assert main["lifecycle"]["postStart"] == {"exec": {"command": ["true"]}}
    assert spec["hostAliases"] == [{"ip": "10.0.0.10", "hostnames": ["proxy.corp"]}]
    assert spec["dnsConfig"] == {"options": [{"name": "ndots", "value": "2"}]}
    assert spec["priorityClassName"] == "high"
    assert spec["runtimeClassName"] == "gvisor"


@pytest.mark.parametrize("component", COMPONENTS)
def test_hatches_stay_with_their_component(helm: Helm, component: str) -> None:
    values: dict[str, Any] = {"simulator": {"enabled": True}}
    if component == "redis":
        values["redis"] = {"internal": everything(component)}
    else:
        values[component] = {**values.get(component, {}), **everything(component)}
    manifests = helm.template(values=values)
    for other in COMPONENTS:
        if other == component:
            continue
        spec = pod(manifests, other)
        assert "runtimeClassName" not in spec, (component, other)
        assert "initContainers" not in spec, (component, other)
        assert "HATCH" not in env_of(spec["containers"][0]), (component, other)


def test_the_api_keeps_its_prestop_pause_beside_added_hooks(hatched: Manifests, helm: Helm) -> None:
    lifecycle = container(hatched.get("Deployment", "api"), "api")["lifecycle"]
    assert lifecycle["preStop"] == {"sleep": {"seconds": 10}}
    replaced = helm.template(values={"api": {"lifecycle": {"preStop": {"exec": {"command": ["drain"]}}}}})
    assert container(replaced.get("Deployment", "api"))["lifecycle"] == {"preStop": {"exec": {"command": ["drain"]}}}


def test_component_env_comes_after_the_chart_wide_env(helm: Helm) -> None:
    values = {
        "extraEnv": [{"name": "LOG_LEVEL", "value": "info"}],
        "api": {"extraEnv": [{"name": "LOG_LEVEL", "value": "debug"}]},
    }
    entries = container(helm.template(values=values).get("Deployment", "api"))["env"]
    levels = [entry["value"] for entry in entries if entry["name"] == "LOG_LEVEL"]
    assert levels == ["info", "debug"]  # the kubelet keeps the last


def test_the_scenario_renders_every_hatch(helm: Helm) -> None:
    manifests = helm.template([HATCHES])
    api = pod(manifests, "api")
    assert {volume["name"] for volume in api["volumes"]} >= {"corporate-ca", "secrets-store"}
    assert api["volumes"][-1]["csi"]["volumeAttributes"]["secretProviderClass"] == f"{RELEASE}-anthropic"


class TestExtraObjects:
    def test_objects_and_strings_go_through_tpl(self, helm: Helm) -> None:
        manifests = helm.template([HATCHES])
        (provider,) = manifests.all("SecretProviderClass")
        assert provider["metadata"]["name"] == f"{RELEASE}-anthropic"
        extra = next(item for item in manifests.all("ConfigMap") if item["metadata"]["name"].endswith("-extra"))
        assert extra["metadata"]["name"] == f"{RELEASE}-claude-gateway-extra"
        assert extra["data"] == {"release": RELEASE}

    def test_none_by_default(self, default_render: Manifests) -> None:
        assert default_render.all("SecretProviderClass") == []


class TestGlobal:
    def images(self, manifests: Manifests) -> list[str]:
        pods = [doc["spec"]["template"]["spec"] for doc in manifests.all("Deployment")]
        pods += [doc["spec"] for doc in manifests.all("Pod")]
        return [item["image"] for spec in pods for item in spec["containers"] + spec.get("initContainers", [])]

    def test_the_image_registry_is_applied_to_every_chart_image(self, helm: Helm) -> None:
        values = {"global": {"imageRegistry": "mirror.example.com"}, "simulator": {"enabled": True}}
        images = self.images(helm.template(values=values))
        assert len(images) == 5  # api, worker, redis, simulator, test
        assert all(image.startswith("mirror.example.com/") for image in images), images
        assert "mirror.example.com/valkey/valkey:8.1.11-alpine" in images
        assert "mirror.example.com/claude-gateway:0.1.0" in images

    def test_without_it_each_image_keeps_its_own_registry(self, default_render: Manifests) -> None:
        images = self.images(default_render)
        assert "docker.io/valkey/valkey:8.1.11-alpine" in images
        assert "claude-gateway:0.1.0" in images

    def test_pull_secrets_on_every_pod(self, helm: Helm) -> None:
        manifests = helm.template(
            values={
                "global": {"imagePullSecrets": ["mirror", {"name": "shared"}]},
                "imagePullSecrets": [{"name": "registry"}, {"name": "shared"}],
                "simulator": {"enabled": True},
            }
        )
        pods = [doc["spec"]["template"]["spec"] for doc in manifests.all("Deployment")]
        pods += [doc["spec"] for doc in manifests.all("Pod")]
        assert len(pods) == 5
        for spec in pods:
            assert spec["imagePullSecrets"] == [{"name": "mirror"}, {"name": "shared"}, {"name": "registry"}]

    def test_a_parent_charts_other_globals_pass(self, helm: Helm) -> None:
        assert helm.template(values={"global": {"storageClass": "fast"}}).get("Deployment", "api")


class TestSchemaStaysStrict:
    @pytest.mark.parametrize(
        ("values", "key"),
        [
            ({"api": {"extraVolume": []}}, "extraVolume"),
            ({"redis": {"internal": {"sidecar": []}}}, "sidecar"),
            ({"api": {"lifecycle": {"preStart": {}}}}, "preStart"),
            ({"worker": {"dnsConfig": {"nameserver": ["1.1.1.1"]}}}, "nameserver"),
            ({"keda": {"api": {"minReplica": 1}}}, "minReplica"),
        ],
        ids=["api", "redis", "lifecycle", "dns", "keda"],
    )
    def test_a_misspelt_hatch_is_refused(self, helm: Helm, values: dict[str, Any], key: str) -> None:
        error = helm.template_error(values=values)
        assert key in error
        assert "not allowed" in error.lower()
