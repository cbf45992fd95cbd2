"""Claude Code and the official TypeScript SDK, installed from npm once into `.tools/npm` (ignored by git).

Fixture `npm_tools` (session scope; import it into a conftest to use it): an `NpmTools` whose `claude(...)` runs
Claude Code's `-p` mode against a base URL and returns its JSON result, and whose `node(script, ...)` runs an ES
module that may `import Anthropic from "@anthropic-ai/sdk"` and prints one JSON value, which it returns.
The versions are pinned (`PACKAGES`), so that a new release cannot change what the tests see overnight; bump them
on purpose. The install is reused while those versions are present. No npm or node: skipped with the reason; under CI=true that,
or a failed install, fails the test instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.programs import in_ci, require_program

NPM_PREFIX = Path(__file__).resolve().parents[2] / ".tools" / "npm"
# name -> version: the releases the tests were written against.
PACKAGES = {"@anthropic-ai/claude-code": "2.1.197", "@anthropic-ai/sdk": "1.17.0"}
# The first install downloads Claude Code's native binary (~250 MB); later ones come from npm's cache.
INSTALL_TIMEOUT_S = 900.0
# One `claude -p` turn against a local server takes about a second; the margin is for a loaded machine.
CLAUDE_TIMEOUT_S = 180.0
NODE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ClaudeResult:
    """What `claude -p --output-format json` printed (`result`: its last JSON object) and its exit status."""

    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str


@dataclass(frozen=True)
class NpmTools:
    prefix: Path
    node_program: str
    claude_program: Path

    def claude(
        self,
        base_url: str,
        prompt: str,
        *args: str,
        api_key: str = "sk-ant-npm-tools",
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = CLAUDE_TIMEOUT_S,
    ) -> ClaudeResult:
        """`claude -p PROMPT --output-format json ARGS` with a throwaway HOME, nothing sent but API calls."""
        with tempfile.TemporaryDirectory(prefix="cgw-claude-home-") as home:
            completed = subprocess.run(
                [str(self.claude_program), "-p", prompt, "--output-format", "json", *args],
                cwd=cwd or home,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": home,
                    "ANTHROPIC_BASE_URL": base_url,
                    "ANTHROPIC_API_KEY": api_key,
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                    **(env or {}),
                },
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise AssertionError(f"claude printed no JSON (exit {completed.returncode}): {completed.stderr[-2000:]}")
        return ClaudeResult(completed.returncode, json.loads(lines[-1]), completed.stdout, completed.stderr)

    def node(
        self,
        script: str,
        *,
        base_url: str,
        api_key: str = "sk-ant-npm-tools",
        env: Mapping[str, str] | None = None,
        timeout_s: float = NODE_TIMEOUT_S,
    ) -> Any:
        """Run an ES module (top-level `await` allowed) and return the JSON value of its last stdout line.

        The script sees `ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY`, which `new Anthropic()` reads."""
        scripts = self.prefix / "scripts"
        scripts.mkdir(exist_ok=True)
        # Inside the prefix, so that `import "@anthropic-ai/sdk"` resolves to its node_modules.
        with tempfile.NamedTemporaryFile("w", suffix=".mjs", dir=scripts, delete=False) as file:
            file.write(script)
        try:
            completed = subprocess.run(
                [self.node_program, file.name],
                env={**os.environ, "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": api_key, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        finally:
            Path(file.name).unlink(missing_ok=True)
        if completed.returncode != 0:
            raise AssertionError(f"node exited {completed.returncode}: {completed.stderr[-3000:]}")
        lines = completed.stdout.strip().splitlines()
        if not lines:
            raise AssertionError(f"node printed nothing: {completed.stderr[-3000:]}")
        return json.loads(lines[-1])


def claude_binary(prefix: Path) -> Path:
    """Claude Code's native binary, from the platform package npm installed beside it."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), "x64"
    )
    system = platform.system().lower()
    modules = prefix / "node_modules" / "@anthropic-ai"
    for name in (f"claude-code-{system}-{arch}", f"claude-code-{system}-{arch}-musl"):
        candidate = modules / name / "claude"
        if candidate.is_file():
            return candidate
    # Where npm ran the package's postinstall, the launcher is the binary itself.
    return prefix / "node_modules" / ".bin" / "claude"


def _installed(prefix: Path) -> bool:
    modules = prefix / "node_modules"
    return (
        all((modules / package / "package.json").is_file() for package in PACKAGES) and claude_binary(prefix).is_file()
    )


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason}: CI=true, so this is a failure")
    pytest.skip(reason)


def install_npm_tools(prefix: Path = NPM_PREFIX) -> NpmTools:
    """The tools, installed into `prefix` unless already there; one installer at a time (a file lock)."""
    npm = require_program("npm", "Claude Code and the TypeScript SDK are installed with npm")
    node = require_program("node", "the TypeScript SDK runs on node")
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(prefix):
            specs = [f"{package}@{version}" for package, version in PACKAGES.items()]
            try:
                completed = subprocess.run(
                    [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *specs],
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                _unavailable(f"npm install {' '.join(specs)} took more than {INSTALL_TIMEOUT_S:.0f} s")
            if completed.returncode != 0 or not _installed(prefix):
                _unavailable(f"npm install {' '.join(specs)} failed: {completed.stderr[-1500:]}")
    return NpmTools(prefix, node, claude_binary(prefix))


@pytest.fixture(scope="session")
def npm_tools() -> NpmTools:
    """Claude Code and `@anthropic-ai/sdk` from npm, installed once (see the module docstring)."""
    return install_npm_tools()
