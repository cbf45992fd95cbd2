"""The kubectl commands of the runbooks, parsed into what they name: resources by kind and name, label selectors.

A runbook writes commands for a novice to paste: `<namespace>`, `<release>`, `<pod>`, `<client>` are the only
placeholders, and the chart's resource names are spelled as the chart renders them (`<release>-claude-gateway`).
tests/chart/test_monitoring.py checks every name and selector against `helm template` output.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .catalogue import RUNBOOKS

# A command in a ```shell block (one per line, up to a pipe) or in an inline `code span`.
_SHELL_BLOCK = re.compile(r"```shell\n(?P<body>.*?)```", re.DOTALL)
_INLINE = re.compile(r"`(?P<command>kubectl [^`]+)`")
# kubectl's short names for the kinds the runbooks use.
KINDS = {
    "deploy": "Deployment",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "svc": "Service",
    "service": "Service",
    "services": "Service",
    "hpa": "HorizontalPodAutoscaler",
    "horizontalpodautoscaler": "HorizontalPodAutoscaler",
    "ingress": "Ingress",
    "httproute": "HTTPRoute",
    "servicemonitor": "ServiceMonitor",
    "prometheusrule": "PrometheusRule",
    "endpoints": "Endpoints",
    "configmap": "ConfigMap",
    "secret": "Secret",
    "pdb": "PodDisruptionBudget",
}
# Verbs whose first positional argument is a resource (kind, kind/name or kinds,separated by commas).
_RESOURCE_VERBS = {"get", "describe", "delete", "logs", "exec", "top", "edit", "scale", "port-forward"}
_ROLLOUT_VERBS = {"restart", "history", "status", "undo"}
# Flags that take a value (so that the value is not read as a positional argument).
_VALUED_FLAGS = {"-n", "--namespace", "-l", "--selector", "-c", "--container", "-o", "--output", "--since", "--tail"}


@dataclass(frozen=True)
class Requirement:
    """`key` and the operator: `=` (one value) or `in` (any of values)."""

    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) in self.values


@dataclass(frozen=True)
class Command:
    runbook: str
    text: str
    verb: str  # "get", "logs", "rollout restart", ...
    kinds: tuple[str, ...]  # Kubernetes kinds it acts on ("Pod" for logs/exec/top by selector)
    names: tuple[tuple[str, str], ...] = field(default=())  # (kind, name) named explicitly
    selector: tuple[Requirement, ...] = field(default=())

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.selector)


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """Equality (`a=b`, `a==b`) and set-based (`a in (x,y)`) requirements, comma-separated."""
    requirements: list[Requirement] = []
    for part in re.findall(r"[^,(]+\([^)]*\)|[^,]+", text):
        part = part.strip()
        set_based = re.fullmatch(r"(?P<key>[\w./-]+)\s+in\s+\((?P<values>[^)]*)\)", part)
        if set_based:
            values = frozenset(value.strip() for value in set_based["values"].split(","))
            requirements.append(Requirement(set_based["key"], "in", values))
            continue
        equality = re.fullmatch(r"(?P<key>[\w./-]+)==?(?P<value>[\w.<>-]+)", part)
        if equality is None:
            raise ValueError(f"selector requirement not understood: {part!r} in {text!r}")
        requirements.append(Requirement(equality["key"], "=", frozenset({equality["value"]})))
    return tuple(requirements)


def parse(runbook: str, text: str) -> Command:
    words = shlex.split(text.split(" | ")[0])
    assert words[0] == "kubectl", text
    positional: list[str] = []
    selector: tuple[Requirement, ...] = ()
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            break
        if word in {"-l", "--selector"}:
            selector = parse_selector(words[i + 1])
            i += 2
            continue
        if word.startswith("--selector="):
            selector = parse_selector(word.split("=", 1)[1])
        elif word in _VALUED_FLAGS:
            i += 1
        elif not word.startswith("-"):
            positional.append(word)
        i += 1
    verb, arguments = positional[0], positional[1:]
    if verb == "rollout":
        verb, arguments = f"rollout {arguments[0]}", arguments[1:]
    elif verb not in _RESOURCE_VERBS:
        raise ValueError(f"{runbook}: kubectl verb not understood: {text!r}")
    if verb == "port-forward":  # `port-forward deployment/<name> 8000:8000`: the rest are ports
        arguments = arguments[:1]
    kinds: list[str] = []
    names: list[tuple[str, str]] = []
    if verb in {"logs", "exec"} and (not arguments or "/" not in arguments[0]):
        kinds.append("Pod")
        names += [("Pod", argument) for argument in arguments[:1]]
    elif arguments:
        first, rest = arguments[0], arguments[1:]
        if "/" in first:
            for argument in arguments:
                kind, name = argument.split("/", 1)
                kinds.append(KINDS[kind])
                names.append((KINDS[kind], name))
        else:
            kinds += [KINDS[kind] for kind in first.split(",")]
            names += [(kinds[0], name) for name in rest]
    return Command(runbook, text, verb, tuple(kinds), tuple(names), selector)


def commands_in(runbook: str, text: str) -> list[Command]:
    found = [
        line.strip()
        for block in _SHELL_BLOCK.finditer(text)
        for line in block["body"].splitlines()
        if line.strip().startswith("kubectl ")
    ]
    found += [match["command"] for match in _INLINE.finditer(text)]
    return [parse(runbook, command) for command in found]


def all_commands(directory: Path = RUNBOOKS) -> list[Command]:
    return [command for path in sorted(directory.glob("*.md")) for command in commands_in(path.stem, path.read_text())]


def substitute(value: str, release: str, namespace: str) -> str:
    return value.replace("<release>", release).replace("<namespace>", namespace)
