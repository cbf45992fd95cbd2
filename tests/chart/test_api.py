"""The API Deployment: the image's command, probes, graceful shutdown, security, the settings it reads."""

from __future__ import annotations

from typing import Any

from tests.chart.conftest import CHART, Helm, Manifests, container, env_of

DEEP_HEALTH = "/health"
# cluster-autoscaler's --max-graceful-termination-sec default: it kills a pod it evicts after this long.
CLUSTER_AUTOSCALER_GRACE_CAP_S = 600


def http_probe_path(probe: dict[str, Any]) -> str:
    path: str = probe["httpGet"]["path"]
    return path


class TestProbes:
    def test_liveness_is_health_live(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        assert http_probe_path(api["livenessProbe"]) == "/health/live"

    def test_readiness_is_health_ready(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        assert http_probe_path(api["readinessProbe"]) == "/health/ready"

    def test_startup_probe_guards_the_others(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        startup = api["startupProbe"]
        assert http_probe_path(startup) == "/health/live"
        # Long enough for Gunicorn and its workers to boot on a busy node.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 30

    def test_no_probe_anywhere_uses_the_deep_health_check(self, full_render: Manifests) -> None:
        for deployment in full_render.all("Deployment"):
            for item in deployment["spec"]["template"]["spec"]["containers"]:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if "httpGet" in item.get(probe, {}):
                        assert http_probe_path(item[probe]) != DEEP_HEALTH, (deployment["metadata"]["name"], probe)

    def test_probes_target_the_named_port(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        assert api["ports"] == [
            {"name": "http", "containerPort": 8000, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
        ]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert api[probe]["httpGet"]["port"] == "http"


class TestShutdown:
    def grace_parts(self, manifests: Manifests) -> tuple[int, int, int]:
        deployment = manifests.get("Deployment", "api")
        api = container(deployment)
        pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
        graceful = int(env_of(api)["GRACEFUL_TIMEOUT_S"])
        return pre_stop, graceful, deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    def test_grace_period_covers_prestop_and_the_graceful_timeout(self, default_render: Manifests) -> None:
        pre_stop, graceful, grace = self.grace_parts(default_render)
        assert pre_stop > 0
        assert graceful == 570
        assert grace >= pre_stop + graceful

    def test_default_grace_period_is_within_the_cluster_autoscaler_cap(self, default_render: Manifests) -> None:
        # cluster-autoscaler gives an evicted pod at most 600 s (max-graceful-termination-sec) before killing it.
        *_, grace = self.grace_parts(default_render)
        assert grace <= CLUSTER_AUTOSCALER_GRACE_CAP_S

    def test_the_cap_is_documented_at_the_value(self) -> None:
        text = (CHART / "values.yaml").read_text()
        block = text[: text.index("  gracefulTimeoutSeconds:")].rsplit("  # --", 1)[1]
        assert "10 + 570 + 15 = 595 s" in block
        assert "cluster-autoscaler" in block

    def test_grace_period_follows_the_values(self, helm: Helm) -> None:
        manifests = helm.template(values={"api": {"gracefulTimeoutSeconds": 900, "preStopSleepSeconds": 20}})
        pre_stop, graceful, grace = self.grace_parts(manifests)
        assert (pre_stop, graceful) == (20, 900)
        assert grace >= 920

    def test_the_sum_is_written_beside_it(self, helm: Helm) -> None:
        output = helm.run(*helm.template_args(), "--show-only", "templates/api-deployment.yaml").stdout
        assert "10 (preStop) + 570 (graceful timeout, longer than the longest stream) + 15 (margin) = 595" in output
        assert "terminationGracePeriodSeconds: 595" in output

    def test_rollout_never_drops_below_the_wanted_pods(self, default_render: Manifests) -> None:
        strategy = default_render.get("Deployment", "api")["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0


class TestCommand:
    def test_serves_with_the_image_cli(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        assert api["command"] == ["claude-gateway"]
        assert api["args"][0] == "serve"
        assert env_of(api)["PORT"] == "8000"
        assert env_of(api)["WORKERS"] == "2"

    def test_image_defaults_to_the_app_version(self, default_render: Manifests) -> None:
        assert container(default_render.get("Deployment", "api"))["image"] == "claude-gateway:0.1.0"

    def test_a_digest_pins_the_image(self, helm: Helm) -> None:
        digest = "sha256:" + "ab" * 32
        manifests = helm.template(values={"image": {"repository": "r.example/cg", "digest": digest}})
        for deployment in manifests.all("Deployment"):
            if deployment["metadata"]["labels"]["app.kubernetes.io/component"] in {"api", "worker"}:
                assert container(deployment)["image"] == f"r.example/cg@{digest}"

    def test_settings_come_from_the_configmap(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        config = default_render.get("ConfigMap")
        assert api["envFrom"][0] == {"configMapRef": {"name": config["metadata"]["name"]}}
        data = config["data"]
        assert data["RATE_LIMIT"] == "10/minute"
        assert data["MAX_BODY_BYTES"] == "10485760"  # whole, not 1.048576e+07
        assert data["UPSTREAM_TIMEOUT_S"] == "30"
        assert data["REDIS_TIMEOUT_S"] == "0.5"
        assert data["METRICS_ENABLED"] == "true"
        assert all(isinstance(value, str) for value in data.values())


class TestSecurity:
    def test_pod_runs_as_the_image_user_with_runtime_default_seccomp(self, full_render: Manifests) -> None:
        for deployment in full_render.all("Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            security = pod["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["runAsUser"] >= 10000
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False

    def test_containers_are_locked_down(self, full_render: Manifests) -> None:
        pods = [doc["spec"]["template"]["spec"] for doc in full_render.all("Deployment")]
        pods += [doc["spec"] for doc in full_render.all("Pod")]
        for pod in pods:
            for item in pod["containers"]:
                security = item["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, item["name"]
                assert security["readOnlyRootFilesystem"] is True, item["name"]
                assert security["capabilities"]["drop"] == ["ALL"], item["name"]
                assert security.get("privileged", False) is False, item["name"]
                assert security["seccompProfile"] == {"type": "RuntimeDefault"}, item["name"]

    def test_only_tmp_is_writable(self, default_render: Manifests) -> None:
        deployment = default_render.get("Deployment", "api")
        mounts = {mount["mountPath"]: mount for mount in container(deployment)["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
        writable = [path for path, mount in mounts.items() if not mount.get("readOnly", False)]
        assert writable == ["/tmp"]
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]

    def test_metrics_directory_is_on_the_writable_emptydir(self, default_render: Manifests) -> None:
        api = container(default_render.get("Deployment", "api"))
        directory = env_of(api)["PROMETHEUS_MULTIPROC_DIR"]
        writable = [mount["mountPath"] for mount in api["volumeMounts"] if not mount.get("readOnly", False)]
        assert any(directory.startswith(path.rstrip("/") + "/") for path in writable), (directory, writable)

    def test_resources_are_set_on_every_container(self, full_render: Manifests) -> None:
        pods = [doc["spec"]["template"]["spec"] for doc in full_render.all("Deployment")]
        pods += [doc["spec"] for doc in full_render.all("Pod")]
        for pod in pods:
            for item in pod["containers"]:
                resources = item["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), item["name"]
                assert "memory" in resources["limits"], item["name"]
