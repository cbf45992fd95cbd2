"""Run inside a fresh network namespace (`unshare -n`) by tests/chart/test_valkey_runs.py: start the chart's Redis
container from its rendered command, args, env and probes, on that namespace's own loopback, and report.

argv[1]: a JSON spec {"command", "args", "env", "probes", "url", "password", "run_dir", "data_dir", "bin"}.
stdout: a JSON report. The rendered paths /run/valkey and /data are the container's volumes; here they are
directories of the test's own (`run_dir`, `data_dir`), and nothing else of the render is changed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Any

import redis

START_DEADLINE_S = 30.0
POLL_S = 0.05
PROBE_TIMEOUT_S = 10


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = {"PATH": f"{spec['bin']}:/usr/bin:/bin", **spec["env"]}
    script = spec["command"][2].replace("/run/valkey", spec["run_dir"])
    args = [spec["data_dir"] if arg == "/data" else arg for arg in spec["args"]]
    report: dict[str, Any] = {}
    server = subprocess.Popen(
        [*spec["command"][:2], script, *spec["command"][3:], *args], env=env, cwd=spec["data_dir"]
    )

    def probe(name: str, **extra: str) -> int:
        return subprocess.run(
            spec["probes"][name], env={**env, **extra}, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False
        ).returncode

    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while probe("startupProbe") != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                report["started"] = False
                print(json.dumps(report))
                return
            time.sleep(POLL_S)
        report["started"] = True
        report["probes"] = {name: probe(name) for name in spec["probes"]}
        report["probe_with_a_wrong_password"] = probe("readinessProbe", REDISCLI_AUTH="wrong", VALKEYCLI_AUTH="wrong")
        unauthenticated = subprocess.run(
            ["valkey-cli", "-h", "127.0.0.1", "ping"],
            env={"PATH": env["PATH"]},
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
        report["unauthenticated"] = unauthenticated.stdout + unauthenticated.stderr
        with open(f"/proc/{server.pid}/cmdline", "rb") as file:
            report["cmdline"] = file.read().replace(b"\0", b" ").decode()
        report["auth_file_mode"] = oct(stat.S_IMODE(os.stat(os.path.join(spec["run_dir"], "auth.conf")).st_mode))
        client = redis.Redis.from_url(spec["url"], socket_timeout=5)
        config: dict[str, str] = {}
        for name in ("maxmemory", "maxmemory-policy", "appendonly", "appendfsync", "save", "dir"):
            answer: dict[str, str] = client.config_get(name)  # type: ignore[assignment]  # sync client: a dict
            config.update(answer)
        report["config"] = config
        report["kept"] = client.get("chart-test:kept")
        report["kept"] = report["kept"].decode() if report["kept"] else None
        client.set("chart-test:kept", "yes")
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        report["exit_code"] = server.wait(timeout=30)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
