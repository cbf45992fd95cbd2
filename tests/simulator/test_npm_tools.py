"""The npm tools fixture's own rules: without npm a test is skipped with the reason, or fails under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.npm_tools import install_npm_tools


def test_without_npm_it_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="npm not found"):
        install_npm_tools(tmp_path / "npm")


def test_without_npm_it_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")

    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        install_npm_tools(tmp_path / "npm")
