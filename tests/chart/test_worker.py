"""The worker Deployment: same image, `claude-gateway worker`, exec probes, a grace period from the job settings."""

from __future__ import annotations

import math

import pytest

from tests.chart.conftest import CI_VALUES, Helm, Manifests, container, env_of

WORKER_CHECK = ["claude-gateway", "worker", "--check"]
# The SDK's longest backoff between two tries (anthropic._constants.MAX_RETRY_DELAY), as the gateway counts it.
SDK_MAX_RETRY_DELAY_S = 8


def test_runs_the_worker_from_the_api_image(default_render: Manifests) -> None:
    api = container(default_render.get("Deployment", "api"))
    worker = container(default_render.get("Deployment", "worker"))
    assert worker["image"] == api["image"]
    assert worker["command"] == ["claude-gateway"]
    assert worker["args"] == ["worker"]


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_probes_run_the_worker_check(default_render: Manifests, probe: str) -> None:
    worker = container(default_render.get("Deployment", "worker"))
    assert worker[probe]["exec"]["command"] == WORKER_CHECK
    # The check starts a Python process: the kubelet's default 1 s timeout is too short.
    assert worker[probe]["timeoutSeconds"] >= 5


def test_the_heartbeat_file_is_local_and_writable(default_render: Manifests, helm: Helm) -> None:
    worker = container(default_render.get("Deployment", "worker"))
    path = env_of(worker)["WORKER_HEARTBEAT_FILE"]
    assert path == "/tmp/claude-gateway/worker-heartbeat"
    # On the pod's own emptyDir: a Redis outage cannot make the liveness probe fail.
    volumes = {v["name"]: v for v in default_render.get("Deployment", "worker")["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in worker["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert "emptyDir" in volumes[mount["name"]]
    assert not mount.get("readOnly", False)
    moved = helm.template(values={"worker": {"heartbeatFile": "/tmp/hb"}})
    assert env_of(container(moved.get("Deployment", "worker")))["WORKER_HEARTBEAT_FILE"] == "/tmp/hb"
    assert "/tmp/" in helm.template_error(values={"worker": {"heartbeatFile": "/var/run/hb"}})


def test_reads_redis_and_the_settings_but_not_the_keys_file(helm: Helm) -> None:
    manifests = helm.template([CI_VALUES / "inline-secrets-values.yaml"])
    worker = env_of(container(manifests.get("Deployment", "worker")))
    api = env_of(container(manifests.get("Deployment", "api")))
    assert "REDIS_URL" in worker
    assert "ANTHROPIC_API_KEY" in worker
    assert "API_KEYS_FILE" in api
    assert "API_KEYS_FILE" not in worker


def test_exposes_its_metrics_port(default_render: Manifests) -> None:
    worker = container(default_render.get("Deployment", "worker"))
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    # The worker serves its metrics on METRICS_PORT (it reads no PORT).
    assert "PORT" not in env_of(worker)
    assert default_render.get("ConfigMap")["data"]["METRICS_PORT"] == "9464"
    service = default_render.get("Service", "worker")
    assert service["spec"]["clusterIP"] == "None"
    assert [port["name"] for port in service["spec"]["ports"]] == ["metrics"]


@pytest.mark.parametrize(("timeout_s", "retries"), [(30, 2), (60, 0), (12.5, 5)])
def test_grace_period_outlasts_the_job_completion_wait(helm: Helm, timeout_s: float, retries: int) -> None:
    manifests = helm.template(values={"config": {"upstreamTimeoutSeconds": timeout_s, "upstreamMaxRetries": retries}})
    grace = manifests.get("Deployment", "worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    job_completion_wait = math.ceil(timeout_s * (retries + 1) + SDK_MAX_RETRY_DELAY_S * retries)
    assert grace >= job_completion_wait + 10


def test_no_worker_without_redis(helm: Helm) -> None:
    manifests = helm.template([CI_VALUES / "redis-none-values.yaml"])
    assert manifests.find("Deployment", "worker") is None
    assert "REDIS_URL" not in env_of(container(manifests.get("Deployment", "api")))


def test_no_worker_when_disabled(helm: Helm) -> None:
    manifests = helm.template(values={"worker": {"enabled": False}})
    assert manifests.find("Deployment", "worker") is None
    assert manifests.find("Service", "worker") is None
