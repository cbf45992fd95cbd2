"""A stand-in Kubernetes API server, enough for `helm template --dry-run=server` to run the chart's `lookup`.

No kube-apiserver can be had on this machine (no binary in any reachable registry), and Helm's `lookup` only
answers against a cluster: `helm template` without one returns an empty object. This server answers over a real
socket the few requests Helm makes: the version, API discovery for the kinds the chart renders (so Helm can map
them), and GET of the Secrets it holds; everything else is a Kubernetes-shaped 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x")):
        return lower + "es"
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + "s"


class KubeStub:
    """Serves discovery for `kinds` ((apiVersion, kind) pairs) and the given Secrets by namespace and name."""

    def __init__(self, kinds: set[tuple[str, str]]) -> None:
        self.kinds = kinds | {("v1", "Secret")}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str], release: str) -> None:
        """A Secret as `release` installed it: with the ownership marks Helm checks before it adopts an object."""
        self.secrets[(namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
            },
            "type": "Opaque",
            "data": dict(data),
        }

    def _resources(self, group_version: str) -> dict[str, Any]:
        resources = [
            {
                "name": _plural(kind),
                "singularName": kind.lower(),
                "namespaced": True,
                "kind": kind,
                "verbs": ["get", "list", "create", "update", "patch", "delete"],
            }
            for version, kind in sorted(self.kinds)
            if version == group_version
        ]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        path = path.split("?", 1)[0].rstrip("/")
        if path == "/version":
            return 200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for version, _ in self.kinds:
                if "/" in version:
                    group, _, ver = version.partition("/")
                    groups.setdefault(group, [])
                    if ver not in groups[group]:
                        groups[group].append(ver)
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{ver}", "version": ver} for ver in versions],
                        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
                    }
                    for group, versions in sorted(groups.items())
                ],
            }
        if path == "/api/v1":
            return 200, self._resources("v1")
        if path.startswith("/apis/") and path.count("/") == 3:
            return 200, self._resources(path.removeprefix("/apis/"))
        parts = path.split("/")
        # /api/v1/namespaces/<ns>/secrets/<name>
        if len(parts) == 7 and parts[1:3] == ["api", "v1"] and parts[3] == "namespaces" and parts[5] == "secrets":
            secret = self.secrets.get((parts[4], parts[6]))
            if secret is not None:
                return 200, secret
        return 404, NOT_FOUND

    @contextmanager
    def serving(self, directory: Path) -> Iterator[Path]:
        """Serve on a free loopback port; yield a kubeconfig pointing at it."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = stub.answer(self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        kubeconfig = directory / "kubeconfig"
        host, port = server.server_address[:2]
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stub", "cluster": {"server": f"http://{host!s}:{port}"}}],
                    "users": [{"name": "stub", "user": {}}],
                    "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
                    "current-context": "stub",
                }
            )
        )
        try:
            yield kubeconfig
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
