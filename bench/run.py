"""One benchmark run, start to end: start the servers, measure each phase, profile, stop everything.

Phases, each against every server in turn (the simulator alone, the gateway, the seed's reference):
1. non-streaming, closed loop (wrk) at each client count against the simulator paced like Anthropic, then once with
   it unpaced (answering at once), where throughput measures the servers' CPU; both reference installs, the one
   faster unpaced kept;
2. non-streaming, open loop at a fixed fraction of the gateway's peak (paced) throughput: latency added to the
   simulator's;
3. streams: time to first token, inter-token delay, memory per open stream, completion; the gateway and the
   reference are restarted before each streamed route so that its memory is measured from a fresh heap;
4. the upstream HTTP clients compared: the gateway run with each `UPSTREAM_HTTP_CLIENT` side by side, on
   `/v1/messages` (bench/clients.py); alone with `--clients-only`;
5. (optional) py-spy profiles of the gateway and the reference under load.
Every measurement carries what it cost: CPU seconds of each server's process tree and of the load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.metadata
import os
import platform
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.servers import RedisServer

from bench import clients, measure, profile, targets
from bench.config import BenchConfig, StreamScenario
from bench.loadgen import Target, run_streams
from bench.procfs import MachineCpu, ServerTree
from bench.servers import (
    REFERENCE_INSTALLS,
    REPO,
    Server,
    gateway_env,
    start_gateway,
    start_redis,
    start_reference,
    start_sim,
)
from bench.stats import lower_median
from bench.wrk import run_wrk

READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.2
# Before a server's idle memory is read: a few streams, so that lazy imports and first-use caches are not counted
# as the cost of the streams measured after.
WARMUP = StreamScenario("warm-up", "warm-up", count=10, ramp_s=0.0, tokens=5, tokens_per_s=50.0)
# Machine CPU use before the run above which the figures are flagged as disturbed (someone else's tests, ...).
BUSY_MACHINE_PCT = 20.0
IDLE_CHECK_S = 1.0
# Distributions reported with the run, so that figures can be compared across upgrades.
VERSIONED = ("fastapi", "starlette", "uvicorn", "gunicorn", "uvloop", "httptools", "anthropic", "httpx2", "pydantic")
SECRET_SETTINGS = ("ANTHROPIC_API_KEY", "VALID_API_KEYS", "REDIS_URL")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MakeTarget = Callable[[Server, StreamScenario], Target]
# A closed-loop target, paced (False) or unpaced (True).
MakeClosedLoopTarget = Callable[[bool], Target]


def raise_open_files_limit() -> tuple[int, int]:
    """Thousands of streams need thousands of sockets in every process; children inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _http_ok(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


async def wait_ready(server: Server, workers: int, probe: Target | None, path: str = "") -> None:
    """Until every worker process exists and the server answers 200 (a real request for the reference)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if len(server.tree.pids()) >= workers + 1:
            if probe is not None:
                headers = {"Content-Type": "application/json", **dict(probe.headers)}
                ok = await asyncio.to_thread(_http_ok, server.port, "POST", probe.path, probe.body, headers)
            else:
                ok = await asyncio.to_thread(_http_ok, server.port, "GET", path, None, {})
            if ok:
                return
        await asyncio.sleep(READY_POLL_S)
    output = server.process.output()[-3000:]
    raise SystemExit(f"bench: {server.name} was not ready after {READY_TIMEOUT_S:g} s:\n{output}")


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() or None


async def machine_busy_pct(seconds: float) -> float:
    before = MachineCpu.read()
    await asyncio.sleep(seconds)
    return round(100.0 * MachineCpu.read().busy_fraction_since(before), 1)


def meta(config: BenchConfig, smoke: bool, open_files: tuple[int, int], busy_pct: float) -> dict[str, Any]:
    settings = gateway_env(0, "", config.workers)
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "smoke": smoke,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "machine_cores": os.cpu_count(),
        "machine_busy_pct_before": busy_pct,
        "open_files_limit": list(open_files),
        "versions": _versions(),
        "config": asdict(config),
        "upstream_latency_ms": config.sim_ttft_ms + 1000.0 * config.answer_tokens / config.sim_tokens_per_s,
        "gateway_settings": {
            name: ("<set>" if name in SECRET_SETTINGS else value)
            for name, value in settings.items()
            if name != "ANTHROPIC_BASE_URL"
        },
        "tracing": "FastAPI instrumentation and the gateway's spans on; no OTLP endpoint, so nothing is exported",
        "reference": "bench/reference_app.py: the seed design as written (global AsyncAnthropic, no limits, no metrics)",
        "definitions": {
            "ttft": "from when a stream was due to start (its connect included) to the first read carrying a token",
            "inter_token": "gap between two successive reads that carry at least one token, within a stream",
            "kib_per_stream": "(highest RSS of the server's process tree while the most streams were open - its "
            "idle RSS before its first streams, after a warm-up) / streams open",
            "cpu_ms_per_unit": "utime+stime of the server's process tree over the measurement / requests (streams)",
            "unattributed_cores": "machine CPU outside the servers and the load generator: other processes, and "
            "kernel network work not charged to a process",
            "upstream": "closed loop: paced, the simulator answers in upstream_latency_ms (so C clients cannot exceed "
            "C / that latency); unpaced, it answers at once (ttft_ms=0 tokens_per_s=0), so throughput is bounded by "
            "the servers' CPU",
        },
    }


class Run:
    def __init__(
        self,
        config: BenchConfig,
        *,
        smoke: bool,
        profile_dir: Path | None,
        profile_only: bool = False,
        clients_only: bool = False,
    ) -> None:
        self.config = config
        self.smoke = smoke
        self.profile_dir = profile_dir
        self.profile_only = profile_only
        self.clients_only = clients_only
        # The gateway once per upstream HTTP client, for their comparison (`gateway-builtin`, `gateway-aiohttp`).
        self.client_gateways: dict[str, Server] = {}
        self.results: dict[str, Any] = {}
        self.redis: RedisServer | None = None
        self.sim: Server | None = None
        self.gateway: Server | None = None
        self.reference: Server | None = None
        self.reference_install = REFERENCE_INSTALLS[0]
        self.gateway_logs: list[Server] = []
        # The signal that stopped the run before its end, if one did.
        self.stopped_by: signal.Signals | None = None

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    @property
    def upstream_latency_s(self) -> float:
        return self.config.sim_ttft_ms / 1000.0 + self.config.answer_tokens / self.config.sim_tokens_per_s

    def _trees(self) -> dict[str, ServerTree]:
        assert self.redis is not None
        assert self.redis.process is not None
        trees = {"redis": ServerTree(self.redis.process.pid)}
        for name, server in (("simulator", self.sim), ("gateway", self.gateway), ("reference", self.reference)):
            if server is not None:
                trees[name] = server.tree
        for server in self.client_gateways.values():
            trees[server.name] = server.tree
        return trees

    def _server(self, name: str) -> Server:
        server = {"simulator": self.sim, "gateway": self.gateway, "reference": self.reference}[name]
        assert server is not None
        return server

    async def _start_gateway(self) -> Server:
        assert self.sim is not None
        assert self.redis is not None
        if self.gateway is not None:
            self.gateway.stop()
        self._log("starting the gateway")
        self.gateway = start_gateway(self.sim.port, self.redis.url, self.config.workers)
        self.gateway_logs.append(self.gateway)
        await wait_ready(self.gateway, self.config.workers, None, "/health/ready")
        return self.gateway

    async def _start_reference(self, install: str) -> Server:
        assert self.sim is not None
        if self.reference is not None:
            self.reference.stop()
        self._log(f"starting the reference under {install}")
        self.reference = start_reference(install, self.sim.port, self.config.workers)
        self.reference_install = install
        await wait_ready(self.reference, self.config.workers, targets.chat("reference", self.reference.port, 1))
        return self.reference

    async def _start_client_gateway(self, client: str) -> Server:
        """The gateway with `client` as its upstream HTTP client, (re)started."""
        assert self.sim is not None
        assert self.redis is not None
        if client in self.client_gateways:
            self.client_gateways.pop(client).stop()
        self._log(f"starting the gateway with UPSTREAM_HTTP_CLIENT={client}")
        server = start_gateway(self.sim.port, self.redis.url, self.config.workers, http_client=client)
        self.client_gateways[client] = server
        self.gateway_logs.append(server)
        await wait_ready(server, self.config.workers, None, "/health/ready")
        return server

    def _stop(self, task: asyncio.Task[dict[str, Any]], signum: signal.Signals) -> None:
        self.stopped_by = signum
        task.cancel()

    def _stop_all(self) -> None:
        for client_gateway in self.client_gateways.values():
            client_gateway.stop()
        for server in (self.reference, self.gateway, self.sim):
            if server is not None:
                server.stop()
        if self.redis is not None:
            self.redis.stop()

    # -- the run ----------------------------------------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        config = self.config
        # Ctrl-C or `kill` cancels the run, so that the `finally` below stops every server it started. Left to
        # their default actions (under uvloop, SIGINT did not even stop the run), the servers would outlive it and
        # disturb the next run.
        task = asyncio.current_task()
        assert task is not None
        for signum in STOP_SIGNALS:
            asyncio.get_running_loop().add_signal_handler(signum, self._stop, task, signum)
        open_files = raise_open_files_limit()
        busy = await machine_busy_pct(IDLE_CHECK_S)
        if busy > BUSY_MACHINE_PCT:
            self._log(f"warning: the machine is already {busy:g}% busy: figures will be disturbed")
        self.results["meta"] = meta(config, self.smoke, open_files, busy)
        self._log("starting redis-server and the simulator")
        self.redis = start_redis()
        try:
            self.sim = start_sim(config.sim_ttft_ms, config.sim_tokens_per_s)
            if self.profile_only or self.clients_only:
                self.results.update(nonstreaming=[], unpaced_rounds=[], open_loop=[], streams=[], reference_installs={})
                self.results["reference_choice"] = {
                    "upstream": "unpaced",
                    "connections": None,
                    "throughput_rps": {},
                    "chosen": None,
                }
            if self.clients_only:
                # The clients' comparison, nothing else: it measures what it needs of the others itself.
                self.results["clients"] = await self._clients()
            elif self.profile_only:
                # Where the CPU goes, nothing else: the loop of someone optimising the gateway.
                await self._start_gateway()
                await self._start_reference(self.reference_install)
            else:
                await self._start_gateway()
                self.results["nonstreaming"] = await self._nonstreaming()
                self.results["unpaced_rounds"] = await self._unpaced_rounds()
                self.results["open_loop"] = await self._open_loop()
                self.results["streams"] = await self._streams()
                self.results["clients"] = await self._clients()
            self.results["profile"] = await self._profile() if self.profile_dir else {"skipped": True}
        finally:
            self._stop_all()
        self.results["gateway_log"] = _log_summary(self.gateway_logs)
        return self.results

    # -- phase 1: non-streaming, closed loop ------------------------------------------------------------------------

    async def _closed_loop(self, make: MakeClosedLoopTarget, server: str) -> list[dict[str, Any]]:
        """At each client count against the paced upstream, then once at `unpaced_connections` against the unpaced
        one: paced, C clients cannot exceed C / the upstream's latency, whatever a server's CPU costs."""
        config = self.config
        loads = [(connections, False) for connections in config.concurrencies]
        loads.append((config.unpaced_connections, True))
        rows = []
        for connections, unpaced in loads:
            target = make(unpaced)
            self._log(f"closed loop: {target.name} at {connections} clients")
            latency = None if unpaced else self.upstream_latency_s
            rows.append(await self._one_closed_loop(target, server, connections, latency))
        return rows

    async def _nonstreaming(self) -> list[dict[str, Any]]:
        tokens = self.config.answer_tokens
        sim, gateway = self._server("simulator"), self._server("gateway")
        rows: list[dict[str, Any]] = []
        rows += await self._closed_loop(
            lambda unpaced: targets.simulator(sim.port, tokens, unpaced=unpaced), "simulator"
        )
        rows += await self._closed_loop(
            lambda unpaced: targets.chat("gateway", gateway.port, tokens, unpaced=unpaced), "gateway"
        )
        rows += await self._closed_loop(
            lambda unpaced: targets.gateway_messages(gateway.port, tokens, unpaced=unpaced), "gateway"
        )
        rows += await self._choose_reference()
        return rows

    async def _measure_reference(self, install: str) -> list[dict[str, Any]]:
        port = (await self._start_reference(install)).port
        tokens = self.config.answer_tokens
        rows = await self._closed_loop(
            lambda unpaced: targets.chat("reference", port, tokens, unpaced=unpaced), "reference"
        )
        for row in rows:
            row["install"] = install
        return rows

    async def _choose_reference(self) -> list[dict[str, Any]]:
        """Both installs of the reference measured; the one with the higher throughput against the unpaced upstream
        is kept (and restarted if it was not the last one started). Unpaced, because that is where the install
        matters: its CPU cost per request; paced, both are held to the same ceiling by the upstream's latency."""
        by_install = {install: await self._measure_reference(install) for install in REFERENCE_INSTALLS}
        throughput = {
            install: next(row["throughput_rps"] for row in rows if row["upstream"] == "unpaced")
            for install, rows in by_install.items()
        }
        chosen = max(throughput, key=lambda install: throughput[install])
        if chosen != self.reference_install:
            await self._start_reference(chosen)
        self.results["reference_choice"] = {
            "upstream": "unpaced",
            "connections": self.config.unpaced_connections,
            "throughput_rps": throughput,
            "chosen": chosen,
        }
        self.results["reference_installs"] = by_install
        return by_install[chosen]

    async def _unpaced_rounds(self) -> list[dict[str, float]]:
        """The throughputs the ratios to the reference are read from, measured again in rounds, the gateway's two
        routes and the reference one after the other in each (each round starting one further along, so that no
        server always goes first): a ratio of two measurements taken seconds apart, not minutes."""
        config = self.config
        tokens = config.answer_tokens
        gateway, reference = self._server("gateway"), self._server("reference")
        jobs = [
            ("gateway /chat", "gateway", targets.chat("gateway", gateway.port, tokens, unpaced=True)),
            ("gateway /v1/messages", "gateway", targets.gateway_messages(gateway.port, tokens, unpaced=True)),
            ("reference /chat", "reference", targets.chat("reference", reference.port, tokens, unpaced=True)),
        ]
        rounds = []
        for number in range(config.unpaced_rounds):
            shift = number % len(jobs)
            measured = {}
            for key, server, target in jobs[shift:] + jobs[:shift]:
                self._log(f"unpaced round {number + 1}: {target.name} at {config.unpaced_connections} clients")
                row = await self._one_closed_loop(target, server, config.unpaced_connections, None)
                measured[key] = row["throughput_rps"]
            rounds.append({key: measured[key] for key, _, _ in jobs})
        return rounds

    # -- phase 2: non-streaming, open loop --------------------------------------------------------------------------

    async def _open_loop(self) -> list[dict[str, Any]]:
        config = self.config
        tokens = config.answer_tokens
        sim, gateway = self._server("simulator"), self._server("gateway")
        # The peak the rate is a fraction of: against the paced upstream, the one the open loop runs against.
        rows = [row for row in self.results["nonstreaming"] if row["upstream"] == "paced"]
        pairs = []
        for route, gateway_target in (
            ("/chat", targets.chat("gateway", gateway.port, tokens)),
            ("/v1/messages", targets.gateway_messages(gateway.port, tokens)),
        ):
            peak = max(row["throughput_rps"] for row in rows if row["server"] == "gateway" and row["route"] == route)
            rate = max(1.0, peak * config.open_loop_fraction)
            runs = []
            for _ in range(max(1, config.open_loop_pairs)):
                measured = {}
                for server, target in (("simulator", targets.simulator(sim.port, tokens)), ("gateway", gateway_target)):
                    self._log(f"open loop: {target.name} at {rate:.0f} req/s")
                    measured[server] = await self._one_open_loop(target, server, rate)
                runs.append(measured)
            pairs.append({"route": route, "gateway_peak_rps": peak, "rate_rps": round(rate, 1), **_median_runs(runs)})
        return pairs

    # -- phase 3: streams -------------------------------------------------------------------------------------------

    def _stream_plan(self) -> list[tuple[str, MakeTarget]]:
        return [
            ("simulator", lambda srv, s: targets.simulator(srv.port, s.tokens, s.tokens_per_s, stream=True)),
            ("gateway", lambda srv, s: targets.chat("gateway", srv.port, s.tokens, s.tokens_per_s, stream=True)),
            ("gateway", lambda srv, s: targets.gateway_messages(srv.port, s.tokens, s.tokens_per_s, stream=True)),
            ("reference", lambda srv, s: targets.chat("reference", srv.port, s.tokens, s.tokens_per_s, stream=True)),
        ]

    async def _fresh(self, name: str) -> Server:
        """The gateway and the reference restart before each streamed route: each route's memory is then measured
        from a fresh heap, not one an earlier route had already grown (Python rarely gives memory back)."""
        if name == "gateway":
            return await self._start_gateway()
        if name == "reference":
            return await self._start_reference(self.reference_install)
        return self._server(name)

    async def _streams(self) -> list[dict[str, Any]]:
        rows = []
        for name, make in self._stream_plan():
            if name != "gateway":
                server, idle_rss = await self._fresh_and_warm(name, make)
                rows += [
                    await self._stream_row(name, make(server, scenario), scenario, idle_rss)
                    for scenario in self.config.streams
                ]
                continue
            # The steady scenario in pairs (the simulator's, then the gateway's, freshly started each time as for a
            # single measurement); the last gateway goes on to the other scenarios.
            pairs = []
            for _ in range(max(1, self.config.steady_ttft_pairs)):
                server, idle_rss = await self._fresh_and_warm(name, make)
                pair = []
                for scenario in self.config.streams:
                    if scenario.role == "steady":
                        simulator = self._server("simulator")
                        sim_target = targets.simulator(
                            simulator.port, scenario.tokens, scenario.tokens_per_s, stream=True
                        )
                        pair.append(await self._stream_row("simulator", sim_target, scenario, None))
                        pair.append(await self._stream_row(name, make(server, scenario), scenario, idle_rss))
                pairs.append(pair)
            rows += _median_pair(pairs)
            rows += [
                await self._stream_row(name, make(server, scenario), scenario, idle_rss)
                for scenario in self.config.streams
                if scenario.role != "steady"
            ]
        return rows

    async def _fresh_and_warm(self, name: str, make: MakeTarget) -> tuple[Server, int]:
        """The server (re)started and warmed up with a few streams, and its idle RSS then."""
        server = await self._fresh(name)
        return server, await self._warm(server, make)

    async def _warm(self, server: Server, make: MakeTarget) -> int:
        """A few streams through `server`, then a pause for it to close them: its idle RSS after."""
        warmup = make(server, WARMUP)
        await run_streams(
            warmup,
            targets.stream_format(warmup),
            starts_s=WARMUP.starts(),
            timeout_s=self.config.request_timeout_s,
            sample_rss=lambda: 0,
            sample_every_s=1.0,
        )
        await asyncio.sleep(self.config.settle_s)
        return server.tree.rss()

    async def _stream_row(
        self, name: str, target: Target, scenario: StreamScenario, idle_rss: int | None, phase: str = ""
    ) -> dict[str, Any]:
        """One scenario's streams against `target` (`idle_rss` None: the simulator's, which is never restarted)."""
        self._log(f"{phase}streams: {target.name}, {scenario.name}")
        row = await measure.streams(
            target,
            name,
            self._trees(),
            scenario,
            idle_rss=self._server(name).tree.rss() if idle_rss is None else idle_rss,
            sample_every_s=self.config.rss_sample_every_s,
            timeout_s=self.config.request_timeout_s,
        )
        await asyncio.sleep(self.config.settle_s)
        return row

    # -- phase 4: the upstream HTTP clients compared ------------------------------------------------------------------

    async def _clients(self) -> dict[str, Any]:
        """The gateway with each `UPSTREAM_HTTP_CLIENT`, on `/v1/messages`: unpaced throughput and CPU per request,
        added latency at half the builtin's paced peak (the same rate for every client), TTFT in the steady
        scenario and memory per open stream in the many-streams one (each client's gateway restarted first, for a
        fresh heap). The closed and open loops run twice per client, in the order builtin, aiohttp, aiohttp,
        builtin, so that a machine others are using drifts the same way for both and their ratios hold.
        What the rest of the run measured (the reference, the simulator, the paced peak) is reused; alone
        (`--clients-only`) it is measured here."""
        config = self.config
        tokens = config.answer_tokens
        sim = self._server("simulator")
        steady = next(s for s in config.streams if s.role == "steady")
        many = next(s for s in config.streams if s.role == "many")
        for client in clients.CLIENTS:
            await self._start_client_gateway(client)

        closed: dict[str, list[dict[str, Any]]] = {client: [] for client in clients.CLIENTS}
        for client in clients.ORDER:
            server = self.client_gateways[client]
            target = targets.gateway_messages(server.port, tokens, unpaced=True)
            self._log(f"clients: {server.name} /v1/messages unpaced at {config.unpaced_connections} clients")
            closed[client].append(await self._one_closed_loop(target, server.name, config.unpaced_connections, None))

        reference_rps = self._reference_unpaced_rps()
        if reference_rps is None:
            reference = await self._start_reference(REFERENCE_INSTALLS[0])
            self._log("clients: the reference's /chat unpaced")
            row = await self._one_closed_loop(
                targets.chat("reference", reference.port, tokens, unpaced=True),
                "reference",
                config.unpaced_connections,
                None,
            )
            reference_rps = row["throughput_rps"]
            reference.stop()
            self.reference = None

        peak = self._gateway_paced_peak_rps()
        if peak is None:
            server = self.client_gateways[clients.CLIENTS[0]]
            self._log(f"clients: {server.name} /v1/messages paced at {max(config.concurrencies)} clients (its peak)")
            row = await self._one_closed_loop(
                targets.gateway_messages(server.port, tokens),
                server.name,
                max(config.concurrencies),
                self.upstream_latency_s,
            )
            peak = row["throughput_rps"]
        rate = max(1.0, peak * config.open_loop_fraction)
        open_loop: dict[str, list[dict[str, Any]]] = {name: [] for name in ("simulator", *clients.CLIENTS)}
        jobs = [("simulator", targets.simulator(sim.port, tokens))] + [
            (client, targets.gateway_messages(self.client_gateways[client].port, tokens)) for client in clients.ORDER
        ]
        for name, target in jobs:
            server_name = "simulator" if name == "simulator" else self.client_gateways[name].name
            self._log(f"clients: open loop, {server_name} at {rate:.0f} req/s")
            open_loop[name].append(await self._one_open_loop(target, server_name, rate))

        simulator_ttft = self._simulator_ttft_p99_ms(steady.role)
        if simulator_ttft is None:
            self._log(f"clients: simulator streams, {steady.name}")
            simulator_rows = await self._stream_rows(
                "simulator", lambda srv, s: targets.simulator(srv.port, s.tokens, s.tokens_per_s, stream=True), [steady]
            )
            simulator_ttft = simulator_rows[0]["ttft_ms"]["p99"]
        streams: dict[str, list[dict[str, Any]]] = {}
        for client in clients.CLIENTS:
            await self._start_client_gateway(client)
            streams[client] = await self._stream_rows(
                self.client_gateways[client].name,
                lambda srv, s: targets.gateway_messages(srv.port, s.tokens, s.tokens_per_s, stream=True),
                [steady, many],
            )

        by_client: dict[str, dict[str, Any]] = {}
        for client in clients.CLIENTS:
            by_client[client] = {
                "server": self.client_gateways[client].name,
                "figures": clients.figures(
                    closed=closed[client],
                    open_loop=open_loop[client],
                    simulator_open_loop=open_loop["simulator"][0],
                    steady=streams[client][0],
                    simulator_steady_ttft_p99_ms=simulator_ttft,
                    many=streams[client][1],
                    reference_rps=reference_rps,
                ),
                "closed_loop_unpaced": closed[client],
                "open_loop": open_loop[client],
                "streams": streams[client],
            }
        for server in self.client_gateways.values():
            server.stop()
        self.client_gateways.clear()
        return {
            "route": "/v1/messages",
            "clients": list(clients.CLIENTS),
            "connections": config.unpaced_connections,
            "reference_unpaced_rps": reference_rps,
            "builtin_paced_peak_rps": peak,
            "rate_rps": round(rate, 1),
            "simulator_open_loop": open_loop["simulator"][0],
            "simulator_steady_ttft_p99_ms": simulator_ttft,
            "steady": steady.name,
            "many": many.name,
            "by_client": by_client,
            "ratios": clients.ratios(by_client),
        }

    async def _one_closed_loop(
        self, target: Target, server: str, connections: int, upstream_latency_s: float | None
    ) -> dict[str, Any]:
        config = self.config
        return await measure.closed_loop(
            target,
            server,
            self._trees(),
            connections=connections,
            warmup_s=config.wrk_warmup_s,
            duration_s=config.wrk_duration_s,
            threads=config.wrk_threads,
            timeout_s=config.request_timeout_s,
            upstream_latency_s=upstream_latency_s,
        )

    async def _one_open_loop(self, target: Target, server: str, rate_per_s: float) -> dict[str, Any]:
        config = self.config
        return await measure.open_loop(
            target,
            server,
            self._trees(),
            rate_per_s=rate_per_s,
            warmup_s=config.open_loop_warmup_s,
            duration_s=config.open_loop_duration_s,
            timeout_s=config.request_timeout_s,
        )

    async def _stream_rows(self, name: str, make: MakeTarget, scenarios: list[StreamScenario]) -> list[dict[str, Any]]:
        """`scenarios` against the server `name` (as it runs now: restart it first for a fresh heap), after a warm-up."""
        server = self._server_named(name)
        idle_rss = await self._warm(server, make)
        return [
            await self._stream_row(name, make(server, scenario), scenario, idle_rss, phase="clients: ")
            for scenario in scenarios
        ]

    def _server_named(self, name: str) -> Server:
        for server in self.client_gateways.values():
            if server.name == name:
                return server
        return self._server(name)

    def _reference_unpaced_rps(self) -> float | None:
        rows = self.results.get("nonstreaming", [])
        found = [r["throughput_rps"] for r in rows if r["server"] == "reference" and r["upstream"] == "unpaced"]
        return found[0] if found else None

    def _gateway_paced_peak_rps(self) -> float | None:
        rows = self.results.get("nonstreaming", [])
        found = [
            r["throughput_rps"]
            for r in rows
            if r["server"] == "gateway" and r["route"] == "/v1/messages" and r["upstream"] == "paced"
        ]
        return max(found) if found else None

    def _simulator_ttft_p99_ms(self, role: str) -> float | None:
        rows = self.results.get("streams", [])
        found = [r["ttft_ms"]["p99"] for r in rows if r["server"] == "simulator" and r["role"] == role]
        return found[0] if found else None

    # -- phase 5: profiles ------------------------------------------------------------------------------------------

    async def _profile(self) -> dict[str, Any]:
        """py-spy on each server's workers while it is loaded; the collapsed stacks kept beside the JSON."""
        assert self.profile_dir is not None
        if profile.py_spy_binary() is None:
            return {"skipped": "py-spy not found (pip install py-spy)"}
        config = self.config
        tokens = config.answer_tokens
        steady = next((s for s in config.streams if s.role == "steady"), config.streams[0])
        gateway, reference = self._server("gateway"), self._server("reference")
        pace = steady.tokens_per_s
        jobs: list[tuple[str, Server, Target]] = [
            ("gateway /chat", gateway, targets.chat("gateway", gateway.port, tokens)),
            ("gateway /v1/messages", gateway, targets.gateway_messages(gateway.port, tokens)),
            ("gateway /chat/stream", gateway, targets.chat("gateway", gateway.port, steady.tokens, pace, stream=True)),
            (
                "gateway /v1/messages stream",
                gateway,
                targets.gateway_messages(gateway.port, steady.tokens, pace, stream=True),
            ),
            ("reference /chat", reference, targets.chat("reference", reference.port, tokens)),
            (
                "reference /chat/stream",
                reference,
                targets.chat("reference", reference.port, steady.tokens, pace, stream=True),
            ),
        ]
        out: dict[str, Any] = {
            "samples_per_s": profile.SAMPLES_PER_S,
            "duration_s": config.profile_duration_s,
            "load": f"wrk at {max(config.concurrencies)} clients; streams opened at {steady.name}'s rate",
        }
        for name, server, target in jobs:
            self._log(f"profiling {name}")
            path = self.profile_dir / (name.replace(" ", "_").replace("/", "") + ".collapsed.txt")
            sampler = await profile.record(server.process.popen.pid, path, config.profile_duration_s)
            if target.path == "/chat/stream" or b'"stream": true' in target.body:
                await self._stream_load(target, steady)
            else:
                await run_wrk(
                    target,
                    connections=max(config.concurrencies),
                    duration_s=config.profile_duration_s,
                    threads=config.wrk_threads,
                    timeout_s=config.request_timeout_s,
                )
            if sampler is not None:
                await sampler.wait()
            if path.exists():
                out[name] = {"file": str(path), **profile.summarise(profile.read_collapsed(path))}
            else:
                out[name] = {"skipped": "py-spy wrote nothing (is ptrace permitted?)"}
            await asyncio.sleep(config.settle_s)
        return out

    async def _stream_load(self, target: Target, scenario: StreamScenario) -> None:
        """Streams opened at the scenario's steady rate for the whole profiling window."""
        config = self.config
        rate = scenario.count / scenario.ramp_s if scenario.ramp_s > 0 else float(scenario.count)
        starts = [i / rate for i in range(int(rate * config.profile_duration_s))]
        await run_streams(
            target,
            targets.stream_format(target),
            starts_s=starts,
            timeout_s=config.request_timeout_s + scenario.stream_s,
            sample_rss=lambda: 0,
            sample_every_s=1.0,
        )


def _median_pair(pairs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Of (simulator, gateway) rows of the steady scenario, the pair whose added TTFT p99 is the median, with every
    pair's figures on its gateway row (`ttft_pairs`); [] when there are none. The check reads the median pair."""
    measured = [pair for pair in pairs if len(pair) == 2]
    if not measured:
        return []
    added = [_minus(gw["ttft_ms"]["p99"], sim["ttft_ms"]["p99"]) for sim, gw in measured]
    simulator, gateway = measured[added.index(lower_median(added))]
    gateway["ttft_pairs"] = [
        {"simulator_p99_ms": sim["ttft_ms"]["p99"], "gateway_p99_ms": gw["ttft_ms"]["p99"], "added_p99_ms": value}
        for (sim, gw), value in zip(measured, added, strict=True)
    ]
    gateway["paired_simulator"] = {"ttft_ms": simulator["ttft_ms"]}
    return [gateway]


OPEN_LOOP_QUANTILES = ("p50", "p90", "p99")


def _median_runs(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Of an open loop's (simulator, gateway) pairs of runs: each quantile's added latency, the median of the pairs'
    differences (the lower one of an even count); the runs of the pair whose added p50 is the median, for the table;
    and every pair's figures (`pairs`)."""
    added = [
        {q: _minus(run["gateway"]["latency_ms"][q], run["simulator"]["latency_ms"][q]) for q in OPEN_LOOP_QUANTILES}
        for run in runs
    ]

    p50s = [each["p50"] for each in added]
    shown = runs[p50s.index(lower_median(p50s))]
    return {
        "gateway": shown["gateway"],
        "simulator": shown["simulator"],
        "added_ms": {q: lower_median([each[q] for each in added]) for q in OPEN_LOOP_QUANTILES},
        "pairs": [
            {
                "simulator_ms": {q: run["simulator"]["latency_ms"][q] for q in OPEN_LOOP_QUANTILES},
                "gateway_ms": {q: run["gateway"]["latency_ms"][q] for q in OPEN_LOOP_QUANTILES},
                "added_ms": each,
            }
            for run, each in zip(runs, added, strict=True)
        ],
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _log_summary(gateways: list[Server]) -> dict[str, Any]:
    """Errors the gateways logged during the run (each line of their JSON log has a `level`)."""
    lines = [line for server in gateways for line in server.process.output().splitlines()]
    errors = [line for line in lines if '"level":"error"' in line or '"level":"critical"' in line]
    kinds: dict[str, int] = {}
    for line in errors:
        marker = '"error_type":"'
        start = line.find(marker)
        kind = line[start + len(marker) : line.find('"', start + len(marker))] if start >= 0 else "?"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "lines": len(lines),
        "errors": len(errors),
        "error_types": kinds,
        "first_errors": [e[:300] for e in errors[:3]],
    }
