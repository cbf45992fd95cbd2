"""NOTES.txt: how to reach the gateway and try it, printed by `helm install`."""

from __future__ import annotations

import pytest

from tests.chart.conftest import CHART, CI_VALUES, NAMESPACE, RELEASE, Helm


def notes(helm: Helm, *args: str) -> str:
    # A client-side dry run renders NOTES.txt without a cluster (`helm template` leaves NOTES.txt out).
    if helm.major_version < 4:
        pytest.skip("Helm 3's `install --dry-run=client` still asks a cluster for its version; Helm 4 does not")
    result = helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *args,
    )
    return result.stdout.split("NOTES:", 1)[1]


def test_tells_how_to_reach_and_try_it(helm: Helm) -> None:
    text = notes(helm, "--values", str(CI_VALUES / "simulator-values.yaml"))
    assert f"http://{RELEASE}-claude-gateway.{NAMESPACE}.svc.cluster.local:8000" in text
    assert f"kubectl --namespace {NAMESPACE} port-forward service/{RELEASE}-claude-gateway 8000:8000" in text
    assert "curl -N http://127.0.0.1:8000/chat/stream" in text
    assert '-H "X-API-Key: $CLIENT_KEY"' in text
    assert f"helm test {RELEASE} --namespace {NAMESPACE}" in text
    assert "WARNING" not in text


def test_points_at_production_redis(helm: Helm) -> None:
    text = notes(helm, "--values", str(CI_VALUES / "minimal-values.yaml"))
    assert "redis.mode=internal runs one Valkey pod" in text
    assert "redis.mode=external" in text


def test_says_what_helm_test_does(helm: Helm) -> None:
    text = notes(helm, "--values", str(CI_VALUES / "simulator-values.yaml"))
    assert "POST /v1/messages" in text


def test_shows_the_ingress_url(helm: Helm) -> None:
    text = notes(helm, "--values", str(CI_VALUES / "ingress-tls-values.yaml"))
    assert "https://llm.example.com/" in text
