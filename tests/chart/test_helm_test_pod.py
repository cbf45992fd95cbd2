"""`helm test`: the rendered test pod's own script, run against a real gateway and the simulator over HTTP.

The pod's Python is taken from the render as it is and run with the environment the pod would have: it must pass
when the gateway serves an authenticated /v1/messages, and fail, saying why, when the request is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import Helm, Manifests, env_of
from tests.conftest import CLIENT_KEY, Gateway

SCRIPT_TIMEOUT_S = 120


def probe_pod(manifests: Manifests) -> dict[str, Any]:
    pod = manifests.get("Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return pod


def run_script(
    manifests: Manifests, gateway: Gateway, keys_file: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    item = probe_container(manifests)
    assert item["command"][:2] == ["python", "-c"]
    pod_env = {name: value for name, value in env_of(item).items() if isinstance(value, str)}
    pod_env["GATEWAY_URL"] = gateway.url  # the Service's address, here the gateway on the loopback
    if keys_file is not None:
        pod_env["TEST_KEYS_FILE"] = str(keys_file)
    return subprocess.run(
        [sys.executable, "-c", item["command"][2]],
        env={"PATH": "/usr/bin:/bin", **pod_env, **env},
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )


def probe_container(manifests: Manifests) -> dict[str, Any]:
    (item,) = probe_pod(manifests)["spec"]["containers"]
    result: dict[str, Any] = item
    return result


def keys_file_of(manifests: Manifests, tmp_path: Path) -> Path:
    """The keys file as the pod sees it: the chart's keys Secret, mounted where TEST_KEYS_FILE says."""
    secret = next(item for item in manifests.all("Secret") if "keys.yaml" in item.get("stringData", {}))
    path = tmp_path / "keys.yaml"
    path.write_text(secret["stringData"]["keys.yaml"])
    return path


def keys_values(*entries: dict[str, str]) -> dict[str, Any]:
    return {"clientKeys": {"keys": list(entries), "existingSecret": ""}}


def test_it_sends_an_authenticated_message_and_passes(
    helm: Helm, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    manifests = helm.template(values=keys_values({"name": "ci", "key": CLIENT_KEY}))
    item = probe_container(manifests)
    assert env_of(item)["TEST_KEYS_FILE"] == "/etc/claude-gateway/keys/keys.yaml"
    assert {"name": "client-keys", "mountPath": "/etc/claude-gateway/keys", "readOnly": True} in item["volumeMounts"]
    result = run_script(manifests, make_gateway(), keys_file_of(manifests, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /health/ready 200" in result.stdout
    assert "POST /v1/messages 200" in result.stdout


def test_it_fails_when_the_gateway_refuses_the_key(
    helm: Helm, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    manifests = helm.template(values=keys_values({"name": "ci", "key": "cgw-not-a-key-the-gateway-knows"}))
    result = run_script(manifests, make_gateway(), keys_file_of(manifests, tmp_path))
    assert result.returncode != 0
    assert "POST /v1/messages refused: 403" in result.stderr
    assert "cgw-not-a-key-the-gateway-knows" not in result.stderr


def test_it_fails_when_the_upstream_refuses(helm: Helm, make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    manifests = helm.template(values=keys_values({"name": "ci", "key": CLIENT_KEY}))
    # An upstream that is not there: the gateway is ready, but the message cannot be served.
    gateway = make_gateway(anthropic_base_url="http://127.0.0.1:9")
    result = run_script(manifests, gateway, keys_file_of(manifests, tmp_path))
    assert result.returncode != 0
    assert "POST /v1/messages refused: 5" in result.stderr


def test_a_keys_file_of_digests_needs_a_named_key(
    helm: Helm, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    manifests = helm.template(values=keys_values({"name": "ci", "sha256": "ab" * 32}))
    result = run_script(manifests, make_gateway(), keys_file_of(manifests, tmp_path))
    assert result.returncode != 0
    assert "set tests.clientKey.existingSecret" in result.stderr
    named = helm.template(
        values={**keys_values({"name": "ci", "sha256": "ab" * 32}), "tests": {"clientKey": {"existingSecret": "probe"}}}
    )
    env = env_of(probe_container(named))
    assert env["TEST_CLIENT_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "probe", "key": "key"}
    assert "TEST_KEYS_FILE" not in env
    result = run_script(named, make_gateway(), TEST_CLIENT_KEY=CLIENT_KEY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_valid_api_keys_from_extra_env_are_used(helm: Helm, make_gateway: Callable[..., Gateway]) -> None:
    entry = {"name": "VALID_API_KEYS", "valueFrom": {"secretKeyRef": {"name": "clients", "key": "keys"}}}
    manifests = helm.template(values={"anthropic": {"existingSecret": "up"}, "extraEnv": [entry]}, bare=True)
    env = env_of(probe_container(manifests))
    assert env["VALID_API_KEYS"] == entry
    result = run_script(manifests, make_gateway(), VALID_API_KEYS=f"{CLIENT_KEY},another")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("enabled", [True, False])
def test_it_can_be_left_out(helm: Helm, enabled: bool) -> None:
    manifests = helm.template(values={"tests": {"enabled": enabled}})
    assert (manifests.find("Pod", "test") is not None) is enabled
