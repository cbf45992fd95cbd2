"""`helm package`: what a platform team installs from the registry. The runbooks travel with the chart that
makes the alerts, and the packaged chart renders like the one in the repository."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART, MINIMAL_VALUES, OBSERVABILITY, Helm, observability_files


@pytest.fixture(scope="module")
def package(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    destination = tmp_path_factory.mktemp("package")
    helm.run("package", str(CHART), "--destination", str(destination))
    (archive,) = destination.glob("claude-gateway-*.tgz")
    return archive


def names(package: Path) -> set[str]:
    with tarfile.open(package) as archive:
        return set(archive.getnames())


def test_the_runbooks_are_packaged(package: Path) -> None:
    runbooks = observability_files("runbooks/*.md")
    if not runbooks:
        pytest.skip("observability/runbooks/ has no runbook yet")
    packaged = names(package)
    for path in runbooks:
        assert f"claude-gateway/observability/{path.relative_to(OBSERVABILITY)}" in packaged, path.name


def test_the_repository_only_files_stay_out(package: Path) -> None:
    packaged = names(package)
    assert not [name for name in packaged if name.startswith("claude-gateway/observability/alerts/tests/")]
    assert not [name for name in packaged if name.startswith("claude-gateway/ci/")]
    assert "claude-gateway/.checkov.yaml" not in packaged


def test_the_package_renders_like_the_repository_chart(helm: Helm, package: Path) -> None:
    common = ["--namespace", "ns", "--kube-version", "1.35.0", "--values", str(MINIMAL_VALUES)]
    from_package = helm.run("template", "gw", str(package), *common, "--show-only", "templates/configmap.yaml").stdout
    from_tree = helm.run("template", "gw", str(CHART), *common, "--show-only", "templates/configmap.yaml").stdout
    assert yaml.safe_load(from_package) == yaml.safe_load(from_tree)
