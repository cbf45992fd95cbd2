"""Fixtures for the chart's tests: a real `helm` (found or fetched), renders of the chart, the scanners.

A tool that cannot be had skips the tests that need it, with the reason; under CI=true it fails them instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "claude-gateway"
CI_VALUES = CHART / "ci"
# The chart refuses to render without an upstream key and client keys (an install that refuses every request must
# not go green), so a render "with the defaults" is one with just these two Secrets named: ci/minimal-values.yaml.
MINIMAL_VALUES = CI_VALUES / "minimal-values.yaml"
KIND_VALUES = REPO / "k8s" / "values-kind.yaml"
OBSERVABILITY = REPO / "observability"
TOOLS = REPO / ".tools"
FETCH_TOOLS = REPO / "scripts" / "fetch-tools.sh"

RELEASE = "gw"
NAMESPACE = "claude-gateway"
# The Kubernetes version `helm template` renders for (.Capabilities); the schemas are checked for a range.
RENDER_KUBE_VERSION = "1.35.0"
# Fetching a tool downloads tens of MB (helm) or installs checkov: far longer than one render.
FETCH_TIMEOUT_S = 600
# pytest-timeout budget for a test whose fixtures may have to fetch a tool first.
FETCHING_TEST_TIMEOUT_S = FETCH_TIMEOUT_S + 60
SCAN_BIN = TOOLS / "scan" / "bin"
HELM_TIMEOUT_S = 60


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool fails the run)")
    pytest.skip(reason)


def fetch_tools(part: str) -> str | None:
    """Run scripts/fetch-tools.sh <part>; None when it worked, else what went wrong."""
    try:
        result = subprocess.run(
            ["bash", str(FETCH_TOOLS), part],
            capture_output=True,
            text=True,
            timeout=FETCH_TIMEOUT_S,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return f"scripts/fetch-tools.sh {part} timed out after {FETCH_TIMEOUT_S} s"
    if result.returncode != 0:
        return f"scripts/fetch-tools.sh {part} failed: {result.stderr.strip()[-2000:]}"
    return None


def observability_files(pattern: str) -> list[Path]:
    return sorted(OBSERVABILITY.glob(pattern))


class HelmError(Exception):
    def __init__(self, args: Sequence[str], stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} failed:\n{stderr}")
        self.stderr = stderr


@dataclass(frozen=True)
class Manifests:
    """The documents of one render, with finders by kind and by `app.kubernetes.io/component`."""

    docs: tuple[dict[str, Any], ...]

    def kinds(self) -> list[str]:
        return [doc["kind"] for doc in self.docs]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def find(self, kind: str, component: str | None = None) -> dict[str, Any] | None:
        for doc in self.all(kind):
            labels = doc["metadata"].get("labels", {})
            if component is None or labels.get("app.kubernetes.io/component") == component:
                return doc
        return None

    def get(self, kind: str, component: str | None = None) -> dict[str, Any]:
        doc = self.find(kind, component)
        assert doc is not None, f"no {kind} for component {component!r} in {self.kinds()}"
        return doc


class Helm:
    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self._cache: dict[str, Manifests] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="chart-test-values-"))

    @property
    def major_version(self) -> int:
        version = self.run("version", "--template", "{{ .Version }}").stdout.strip()
        return int(version.lstrip("v").split(".")[0])

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def run(
        self, *args: str, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=HELM_TIMEOUT_S,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        if check and result.returncode != 0:
            raise HelmError(args, result.stderr)
        return result

    def _values_args(self, files: Sequence[Path], values: Mapping[str, Any] | None, bare: bool) -> list[str]:
        args: list[str] = []
        if not files and not bare:
            files = [MINIMAL_VALUES]
        for path in files:
            args += ["--values", str(path)]
        if values:
            # A values file rather than --set: no escaping of dots, commas or brackets to get wrong.
            path = self._tmp / f"values-{len(list(self._tmp.iterdir()))}.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            args += ["--values", str(path)]
        return args

    def template_args(
        self, files: Sequence[Path] = (), values: Mapping[str, Any] | None = None, *, bare: bool = False
    ) -> list[str]:
        """`helm template` arguments; without files, ci/minimal-values.yaml comes first unless `bare`."""
        return [
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            RENDER_KUBE_VERSION,
            *self._values_args(files, values, bare),
        ]

    def template(
        self, files: Sequence[Path] = (), values: Mapping[str, Any] | None = None, *, bare: bool = False
    ) -> Manifests:
        key = json.dumps([[str(path) for path in files], values, bare], sort_keys=True, default=str)
        if key not in self._cache:
            output = self.run(*self.template_args(files, values, bare=bare)).stdout
            docs = tuple(doc for doc in yaml.safe_load_all(output) if doc)
            self._cache[key] = Manifests(docs)
        return self._cache[key]

    def template_error(
        self, files: Sequence[Path] = (), values: Mapping[str, Any] | None = None, *, bare: bool = False
    ) -> str:
        result = self.run(*self.template_args(files, values, bare=bare), check=False)
        assert result.returncode != 0, "the render was expected to fail, and it succeeded"
        return result.stderr


def _find_helm() -> Path | None:
    ours = TOOLS / "bin" / "helm"
    if ours.is_file() and os.access(ours, os.X_OK):
        return ours
    found = shutil.which("helm")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def helm() -> Iterator[Helm]:
    binary = _find_helm()
    if binary is None:
        problem = fetch_tools("kube")
        binary = _find_helm()
        if binary is None:
            unavailable(f"helm is not on PATH nor in .tools/bin, and fetching it did not work: {problem}")
    tool = Helm(binary)
    yield tool
    tool.close()


@pytest.fixture(scope="session")
def scan_bin() -> Path:
    """The scanners' virtualenv (checkov, hadolint, compose-spec), apart from ours: checkov's pins clash with ours."""
    problem = fetch_tools("scan")
    if problem is not None or not (SCAN_BIN / "checkov").is_file():
        unavailable(f"the scanners could not be installed into .tools/scan: {problem}")
    return SCAN_BIN


def all_features_values() -> tuple[list[Path], dict[str, Any]]:
    """Every optional feature on at once; the observability-backed ones when their files are there."""
    files = [
        CI_VALUES / "inline-secrets-values.yaml",
        CI_VALUES / "httproute-values.yaml",
        CI_VALUES / "ingress-tls-values.yaml",
        CI_VALUES / "autoscaling-values.yaml",
        CI_VALUES / "simulator-values.yaml",
    ]
    values: dict[str, Any] = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": bool(observability_files("alerts/*.yaml"))},
            "dashboards": {"enabled": bool(observability_files("dashboards/*.json"))},
        },
        "networkPolicy": {"egress": {"enabled": True}},
        # Every object the chart can make: the Redis volume, the price table, the proxy and admin keys' Secret.
        "redis": {"internal": {"persistence": {"enabled": True}}},
        "prices": {"table": {"models": {"claude-sonnet-4-6": {"input": 3, "output": 15}}}},
        "egressProxy": {"httpsProxy": "http://proxy.example.internal:3128"},
        "adminKeys": {"keys": ["admin-not-a-real-key-0123456789"]},
        "config": {"budgetUsdDay": 20, "budgetUsdMonth": 400},
    }
    return files, values


@pytest.fixture(scope="session")
def default_render(helm: Helm) -> Manifests:
    return helm.template()


@pytest.fixture(scope="session")
def full_render(helm: Helm) -> Manifests:
    files, values = all_features_values()
    return helm.template(files, values)


def container(deployment: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(item for item in containers if item["name"] == name)


def env_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """A container's `env` as name -> value (or the whole entry when it comes from a reference)."""
    return {entry["name"]: entry.get("value", entry) for entry in item.get("env", [])}
