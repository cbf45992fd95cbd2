"""Simulators on free ports (a thread each) and clients pointed at them: the real SDK and raw httpx."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from claude_gateway.simulator import BackgroundSimulator

from .helpers import FAST, MakeSimulator, raw_http, sdk


@pytest.fixture(scope="session")
def simulator() -> Iterator[BackgroundSimulator]:
    """One simulator for the tests that do not read its counters."""
    with BackgroundSimulator(FAST) as running:
        yield running


@pytest.fixture
def make_simulator() -> Iterator[MakeSimulator]:
    """A fresh simulator (counters at zero): `FAST` with the given overrides; stopped after the test."""
    started: list[BackgroundSimulator] = []

    def make(**overrides: Any) -> BackgroundSimulator:
        running = BackgroundSimulator(dataclasses.replace(FAST, **overrides)).start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
async def client(simulator: BackgroundSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with sdk(simulator.base_url) as sdk_client:
        yield sdk_client


@pytest.fixture
async def http(simulator: BackgroundSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with raw_http(simulator.base_url) as http_client:
        yield http_client


@pytest.fixture
def simulator_url(simulator: BackgroundSimulator) -> str:
    return simulator.base_url


# Claude Code and the TypeScript SDK from npm (installed once per session): see tests/support/npm_tools.py.
from tests.support.npm_tools import npm_tools  # noqa: E402, F401
