"""The image's command as the image runs it: an unprivileged user, a read-only tree, only /tmp writable.

No container engine here, so this reproduces the Dockerfile's runtime conditions by hand: what the image's
virtualenv holds (the runtime dependencies pyproject.toml names, with theirs, and the package itself; no dev tools)
copied into a read-only site-packages in a world-readable temporary directory, UID/GID 10001 with no home
(`setpriv`), `HOME=/nonexistent`, `PYTHONDONTWRITEBYTECODE=1`, and `claude-gateway serve` started from there. It
must serve, answer a stream through SIGTERM, and exit cleanly. Nothing is read from the checkout or its `.venv`,
which the unprivileged user may not be able to enter (a clone under a 0700 directory).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import signal
import stat
import subprocess
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterator
from importlib.metadata import Distribution
from pathlib import Path

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import CLIENT_KEY
from tests.gateway.sse_client import data_events
from tests.server.conftest import wait_for_workers
from tests.support.programs import require_program
from tests.support.servers import Process, free_port, wait_for_port

IMAGE_UID = 10001
ROOT = Path(__file__).resolve().parents[2]


def system_python() -> str:
    """An interpreter the unprivileged user can execute (the test venv's may live under a private /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            version = subprocess.run(
                [candidate, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if version == sysconfig.get_python_version():
                return candidate
    pytest.skip(f"no system python{sysconfig.get_python_version()} readable by an unprivileged user")


def target_environment(python: str) -> dict[str, str]:
    """The marker environment of the interpreter the image's command runs on (Debian's 3.11.2 needs async-timeout,
    which the test's own interpreter may not)."""
    full_version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    environment = {key: str(value) for key, value in default_environment().items()}
    return {**environment, "python_full_version": full_version}


def runtime_distributions(environment: dict[str, str]) -> list[Distribution]:
    """The distributions the image installs: pyproject.toml's runtime dependencies and theirs, as installed here."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pending = [Requirement(line) for line in dependencies]
    found: dict[str, Distribution] = {}
    expanded: set[tuple[str, str]] = set()  # (distribution, extra): "uvicorn" and "uvicorn[standard]" differ
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        distribution = found.setdefault(name, importlib.metadata.distribution(name))
        for extra in ["", *sorted(requirement.extras)]:
            if (name, extra) in expanded:
                continue
            expanded.add((name, extra))
            for line in distribution.requires or ():
                needed = Requirement(line)
                if needed.marker is None or needed.marker.evaluate({**environment, "extra": extra}):
                    needed.marker = None
                    pending.append(needed)
    return list(found.values())


def install_image_site(site: Path, python: str) -> None:
    """A site-packages as the image's: every file of the runtime distributions, then the package (`pip install .`)."""
    for distribution in runtime_distributions(target_environment(python)):
        for file in distribution.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:  # scripts in bin/, caches
                continue
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, site / file)
    shutil.copytree(
        ROOT / "service" / "claude_gateway", site / "claude_gateway", ignore=shutil.ignore_patterns("__pycache__")
    )


def make_read_only(path: Path) -> None:
    for entry in [path, *path.rglob("*")]:
        mode = entry.stat().st_mode
        entry.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        if entry.is_dir():
            entry.chmod(entry.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path sits under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="cgw-image-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def image_server(image_root: Path, simulator: Process) -> Iterator[Process]:
    tmp_path = image_root
    if os.geteuid() != 0:
        pytest.skip("switching to the image's UID needs root")
    setpriv = require_program("setpriv", "util-linux, to run as the image's unprivileged user")
    python = system_python()
    site = tmp_path / "venv" / "site-packages"
    install_image_site(site, python)
    make_read_only(site.parent)
    # The image's working directory: empty, and nothing the gateway user can write to.
    workdir = tmp_path / "app"
    workdir.mkdir()
    make_read_only(workdir)
    scratch = tmp_path / "tmp"
    scratch.mkdir(mode=0o1777)
    scratch.chmod(0o1777)
    port = free_port()
    metrics_port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "TMPDIR": str(scratch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(site),
        "ANTHROPIC_BASE_URL": simulator.url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "VALID_API_KEYS": CLIENT_KEY,
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "HOST": "127.0.0.1",
        "WORKERS": "2",
        "GRACEFUL_TIMEOUT_S": "30",
    }
    log_path = scratch / "server.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                setpriv,
                f"--reuid={IMAGE_UID}",
                f"--regid={IMAGE_UID}",
                "--clear-groups",
                python,
                "-m",
                "claude_gateway",
                "serve",
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = Process(popen, port, log_path, metrics_port=metrics_port)
    try:
        try:
            wait_for_port(port)
            wait_for_workers(process, 2)
        except TimeoutError:
            pytest.fail(f"the image's command did not start:\n{process.output()}")
        yield process
    finally:
        process.stop(signal.SIGKILL)


class TestImageCommand:
    async def test_serves_and_drains_as_the_image_would(self, image_server: Process) -> None:
        async with httpx.AsyncClient(base_url=image_server.url, headers={"X-API-Key": CLIENT_KEY}, timeout=30) as http:
            ready = await http.get("/health/ready")
            chat = await http.post("/chat", json={"message": "hi"})
            metrics = await http.get(image_server.metrics_url + "/metrics")
            async with http.stream(
                "POST", "/chat/stream", json={"message": "[[sim:tokens=40 tokens_per_s=40]]"}
            ) as response:
                events = data_events(response)
                await anext(events)
                image_server.popen.send_signal(signal.SIGTERM)
                rest = [event async for event in events]
        assert ready.status_code == 200, image_server.output()
        assert chat.status_code == 200
        assert "claude_gateway_http_requests_total" in metrics.text
        assert rest[-1] == "[DONE]"
        assert await asyncio.to_thread(image_server.popen.wait, 30) == 0
        assert "Traceback" not in image_server.output()
        assert "Permission denied" not in image_server.output()
