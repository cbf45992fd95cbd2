"""The Dockerfile, its build context, docker-compose.yml and .env.example, checked without a container engine.

Building and running the image needs Docker, which this machine lacks; these tests hold the files to what the
image must do (multi-stage on a base pinned by digest, a cached dependency layer installed from a hashed lock compiled for the
image's Python, numeric non-root user, `claude-gateway serve`), and the
Compose file to the Compose specification.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from claude_gateway.settings import Settings
from tests.chart.conftest import FETCHING_TEST_TIMEOUT_S, REPO

DOCKERFILE = REPO / "Dockerfile"
IMAGE_LOCK = REPO / "requirements-image.lock"
PINNED_BASE = re.compile(r"python:3\.12-slim-bookworm@sha256:[0-9a-f]{64}")
IMAGE_USER = "10001:10001"
# The gateway's default GRACEFUL_TIMEOUT_S (docs/CONTRACTS.md).
GRACEFUL_TIMEOUT_S = 600


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


class TestDockerfile:
    def test_multi_stage_on_python_312_slim_pinned_by_digest(self) -> None:
        bases = [stage[0][1].split()[0] for stage in stages()]
        assert len(bases) >= 2
        # The tag beside the digest, for the reader and for `make pins`, which refreshes the digest of that tag.
        assert all(PINNED_BASE.fullmatch(base) for base in bases), bases
        assert len(set(bases)) == 1, "the runtime stage must be the build stage's base (the venv links its python)"

    def test_dependencies_are_their_own_cached_layer_installed_by_hash(self) -> None:
        build = stages()[0]
        copies = [(index, args) for index, (word, args) in enumerate(build) if word == "COPY"]
        runs = [(index, args) for index, (word, args) in enumerate(build) if word == "RUN"]
        lock_copy = next(index for index, args in copies if IMAGE_LOCK.name in args)
        source_copy = next(index for index, args in copies if args.startswith("service/"))
        install = next(index for index, args in runs if f"--requirement {IMAGE_LOCK.name}" in args)
        assert lock_copy < install < source_copy
        assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(build[install][1].split())
        # Only the lock goes into the dependency layer, so a code change does not reinstall everything.
        assert build[lock_copy][1].split()[:-1] == [IMAGE_LOCK.name]
        # The gateway itself: nothing beyond what the lock installed, and no unchecked isolated build.
        package = next(args for word, args in build if word == "RUN" and "pip install --no-deps" in args)
        assert "--no-build-isolation" in package


def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of a `uv pip compile --generate-hashes` lock."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            requirement, *options = line.split()
            name, _, version = requirement.partition("==")
            pins[name] = (
                version,
                [option.removeprefix("--hash=") for option in options if option.startswith("--hash=")],
            )
    return pins


class TestLocks:
    @pytest.mark.parametrize("lock", [REPO / "requirements.lock", IMAGE_LOCK], ids=lambda path: path.name)
    def test_every_pin_is_exact_and_hashed(self, lock: Path) -> None:
        pins = lock_pins(lock)
        assert pins
        for name, (version, hashes) in pins.items():
            assert version, f"{name} is not pinned to one version"
            assert hashes, f"{name} has no hash"
            assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", value) for value in hashes), name

    def test_the_image_lock_is_compiled_for_the_image_python(self) -> None:
        header = IMAGE_LOCK.read_text().split("\n", 3)[:3]
        versions = re.findall(r"--python-version (\d+\.\d+)", " ".join(header))
        base_python = re.findall(r"python:(\d+\.\d+)-", DOCKERFILE.read_text())
        assert versions, header
        assert set(base_python) == set(versions), (versions, base_python)

    def test_the_image_lock_holds_the_runtime_dependencies_at_the_dev_lock_versions(self) -> None:
        image, dev = lock_pins(IMAGE_LOCK), lock_pins(REPO / "requirements.lock")
        project = tomllib.loads((REPO / "pyproject.toml").read_text())
        runtime = {canonicalize_name(Requirement(line).name) for line in project["project"]["dependencies"]}
        build = {canonicalize_name(Requirement(line).name) for line in project["build-system"]["requires"]}
        assert runtime | build <= {canonicalize_name(name) for name in image}
        # Nothing of the dev tools goes into the image.
        assert not {"pytest", "mypy", "ruff"} & set(image)
        assert {name: image[name][0] for name in image if name in dev} == {
            name: dev[name][0] for name in image if name in dev
        }

    def test_runtime_runs_serve_as_a_numeric_non_root_user(self) -> None:
        runtime = stages()[-1]
        users = [args for word, args in runtime if word == "USER"]
        assert users == [IMAGE_USER]
        assert ("CMD", '["claude-gateway", "serve"]') in runtime
        assert not [args for word, args in runtime if word == "ENTRYPOINT"], "an ENTRYPOINT would break `worker`"
        assert ("EXPOSE", "8000") in runtime

    def test_read_only_root_filesystem_needs_only_tmp(self) -> None:
        env_text = " ".join(args for word, args in stages()[-1] if word == "ENV")
        # Temporary files (the metrics directory, Gunicorn's heartbeats) go to /tmp; no bytecode is written.
        assert "TMPDIR=/tmp" in env_text
        assert "PYTHONDONTWRITEBYTECODE=1" in env_text
        assert any(word == "RUN" and "compileall" in args for word, args in stages()[0])

    def test_healthcheck_uses_the_cheap_endpoint(self) -> None:
        checks = [args for word, args in stages()[-1] if word == "HEALTHCHECK"]
        assert len(checks) == 1
        assert "/health/live" in checks[0]

    def test_the_chart_runs_the_image_user(self) -> None:
        values = yaml.safe_load((REPO / "charts" / "claude-gateway" / "values.yaml").read_text())
        uid, gid = (int(part) for part in IMAGE_USER.split(":"))
        assert values["securityContext"]["runAsUser"] == uid
        assert values["securityContext"]["runAsGroup"] == gid


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").replace("**", "*")
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            excluded = not negated
    return excluded


class TestBuildContext:
    def patterns(self) -> list[str]:
        lines = (REPO / ".dockerignore").read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    @pytest.mark.parametrize(
        "path",
        [
            ".env",
            ".venv/bin/python",
            ".git/config",
            ".tools/bin/helm",
            "tests/conftest.py",
            "charts/claude-gateway",
            "service/claude_gateway/__pycache__/app.cpython-312.pyc",
            "service/claude_gateway.egg-info/PKG-INFO",
        ],
    )
    def test_keeps_out(self, path: str) -> None:
        assert dockerignore_excludes(path, self.patterns())

    @pytest.mark.parametrize(
        "path", ["pyproject.toml", "requirements-image.lock", "README.md", "service/claude_gateway/cli.py"]
    )
    def test_lets_in_what_the_build_copies(self, path: str) -> None:
        assert not dockerignore_excludes(path, self.patterns())

    def test_every_copied_path_is_in_the_context(self) -> None:
        for word, args in instructions():
            if word == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert not dockerignore_excludes(source.rstrip("/"), self.patterns()), source


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


class TestCompose:
    def services(self) -> dict[str, dict[str, Any]]:
        services = compose()["services"]
        assert isinstance(services, dict)
        return services

    def test_api_worker_and_redis_with_the_simulator_behind_a_profile(self) -> None:
        services = self.services()
        assert set(services) == {"api", "worker", "redis", "simulator"}
        assert services["simulator"]["profiles"] == ["offline"]
        for name in ("api", "worker", "redis"):
            assert "profiles" not in services[name], name

    def test_gateway_services_run_like_the_chart(self) -> None:
        services = self.services()
        assert services["api"]["command"] == ["claude-gateway", "serve"]
        assert services["worker"]["command"] == ["claude-gateway", "worker"]
        assert services["worker"]["healthcheck"]["test"] == ["CMD", "claude-gateway", "worker", "--check"]
        for name in ("api", "worker", "simulator"):
            service = services[name]
            assert service["user"] == IMAGE_USER, name
            assert service["read_only"] is True, name
            assert any(str(mount).startswith("/tmp") for mount in service["tmpfs"]), name
            assert service["cap_drop"] == ["ALL"], name

    def test_env_from_dot_env_and_redis_inside(self) -> None:
        services = self.services()
        for name in ("api", "worker"):
            assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
            assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0", name
        assert "ports" not in services["redis"]

    def test_api_stops_after_its_streams(self) -> None:
        grace = str(self.services()["api"]["stop_grace_period"])
        assert grace.endswith("s")
        assert int(grace[:-1]) > GRACEFUL_TIMEOUT_S

    @pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
    def test_matches_the_compose_specification(self, scan_bin: Path) -> None:
        python = scan_bin / "python"
        # compose-spec parses strictly (unknown keys, types, durations) but knows neither YAML merge keys nor
        # variable interpolation: resolve both first, as Compose would with no variable set.
        text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", (REPO / "docker-compose.yml").read_text())
        resolved = {key: value for key, value in yaml.safe_load(text).items() if not key.startswith("x-")}
        script = "import sys; from compose_spec import PyCompose; print(sorted(PyCompose.from_yaml(sys.stdin.read()).service_names()))"
        result = subprocess.run(
            [str(python), "-c", script],
            input=json.dumps(resolved),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['api', 'redis', 'simulator', 'worker']"


def test_env_example_names_only_what_the_gateway_reads() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    compose_only = {"COMPOSE_PROFILES", "CLAUDE_GATEWAY_IMAGE", "CLAUDE_GATEWAY_PORT"}
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.MULTILINE)
    assert names
    unknown = {name for name in names if name not in settings | compose_only and not name.startswith("OTEL_")}
    assert not unknown, unknown


def test_env_example_holds_no_secret() -> None:
    text = (REPO / ".env.example").read_text()
    assert re.search(r"^ANTHROPIC_API_KEY=$", text, flags=re.MULTILINE)
    assert re.search(r"^VALID_API_KEYS=$", text, flags=re.MULTILINE)
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_compose_and_chart_agree_on_the_internal_redis_user() -> None:
    redis = compose()["services"]["redis"]
    template = (REPO / "charts" / "claude-gateway" / "templates" / "redis.yaml").read_text()
    uid = str(redis["user"]).split(":")[0]
    assert f"runAsUser: {uid}" in template
