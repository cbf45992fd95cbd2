"""Fixtures of the observability tests. Without promtool they skip, except under CI=true, where they fail."""

from __future__ import annotations

import os

import pytest

from . import promtool as promtool_cli


@pytest.fixture(scope="session")
def promtool() -> promtool_cli.Promtool:
    path = promtool_cli.find()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(promtool_cli.MISSING)
        pytest.skip(promtool_cli.MISSING)
    return promtool_cli.runner(path)
