"""What a run measures and for how long: the full run (`make bench`, about 16 minutes on two cores) and the smoke
run (`--smoke`, seconds: checks the harness end to end, its figures mean nothing)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StreamScenario:
    """`count` streams, started over `ramp_s` seconds at a steady rate (0: all at the same instant), each asking for
    `tokens` output tokens at `tokens_per_s`. `role` is what the targets look for: `steady`, `burst` or `many`."""

    name: str
    role: str
    count: int
    ramp_s: float
    tokens: int
    tokens_per_s: float

    @property
    def stream_s(self) -> float:
        return self.tokens / self.tokens_per_s

    def starts(self) -> list[float]:
        if self.ramp_s <= 0 or self.count <= 1:
            return [0.0] * self.count
        step = self.ramp_s / self.count
        return [i * step for i in range(self.count)]


@dataclass(frozen=True)
class BenchConfig:
    workers: int
    # The simulator's model: Anthropic-like time to first token and generation speed.
    sim_ttft_ms: float
    sim_tokens_per_s: float
    # Output tokens of a non-streaming answer: with the two above, 50 ms + 64 / 400 s = 210 ms per call.
    answer_tokens: int
    concurrencies: tuple[int, ...]
    # Clients of the one closed-loop measurement against an unpaced upstream (answers at once): there throughput is
    # bounded by the servers' CPU, not by clients / the upstream's latency as with the paced one.
    unpaced_connections: int
    wrk_warmup_s: float
    wrk_duration_s: float
    wrk_threads: int
    # The unpaced throughput the ratios to the reference are read from, measured again this many times, the
    # gateway's routes and the reference side by side in each round: the machine's speed drifts over the minutes
    # between the sweep's rows, and a ratio of two rows measured apart moves with it. The median round is the figure.
    unpaced_rounds: int
    # Open loop at this fraction of the gateway's peak throughput.
    open_loop_fraction: float
    open_loop_warmup_s: float
    open_loop_duration_s: float
    # Each route's added latency is the difference of two runs (the simulator's, then the gateway's): measured in
    # this many such pairs, and each quantile's figure is the median of the pairs' differences.
    open_loop_pairs: int
    streams: tuple[StreamScenario, ...]
    # Idle time between two stream scenarios: lets the servers close what the last one left.
    settle_s: float
    # The added time to first token in the steady scenario is the difference of two p99s of 200 streams each: one
    # stream late by a scheduling hiccup moves either. So each gateway route's steady measurement is paired with one
    # of the simulator's taken just before it, this many times, and the median pair's difference is the figure.
    steady_ttft_pairs: int
    rss_sample_every_s: float
    request_timeout_s: float
    profile_duration_s: float


# Streams: 2,000 open at once on two cores is only possible at a gentle pace per stream (every server relays every
# write; at 50 tokens/s the simulator writes every 25 ms, so 2,000 such streams would be 80,000 writes a second):
# they run at 1 token/s. The 200-stream scenarios run at a realistic 50 tokens/s (Sonnet-like).
FULL = BenchConfig(
    workers=2,
    sim_ttft_ms=50.0,
    sim_tokens_per_s=400.0,
    answer_tokens=64,
    concurrencies=(32, 128),
    unpaced_connections=128,
    wrk_warmup_s=2.0,
    wrk_duration_s=8.0,
    wrk_threads=1,
    unpaced_rounds=3,
    open_loop_fraction=0.5,
    open_loop_warmup_s=1.0,
    open_loop_duration_s=8.0,
    open_loop_pairs=3,
    streams=(
        # Opened at a steady 50 a second for 4 s, each 5 s long: 200 open at the end of the ramp.
        StreamScenario("steady-200", "steady", count=200, ramp_s=4.0, tokens=250, tokens_per_s=50.0),
        StreamScenario("burst-200", "burst", count=200, ramp_s=0.0, tokens=100, tokens_per_s=50.0),
        # Opened at 500 a second for 4 s, each 15 s long: 2,000 open together for 11 s, or still all open together
        # if a server takes three times longer than planned to open them.
        StreamScenario("steady-2000", "many", count=2000, ramp_s=4.0, tokens=15, tokens_per_s=1.0),
    ),
    settle_s=1.0,
    steady_ttft_pairs=3,
    rss_sample_every_s=0.1,
    request_timeout_s=30.0,
    profile_duration_s=8.0,
)

SMOKE = replace(
    FULL,
    concurrencies=(4, 8),
    unpaced_connections=8,
    wrk_warmup_s=0.0,
    wrk_duration_s=1.0,
    open_loop_warmup_s=0.2,
    open_loop_duration_s=1.0,
    unpaced_rounds=2,
    open_loop_pairs=2,
    streams=(
        StreamScenario("steady-20", "steady", count=20, ramp_s=0.5, tokens=20, tokens_per_s=50.0),
        StreamScenario("burst-20", "burst", count=20, ramp_s=0.0, tokens=10, tokens_per_s=50.0),
        StreamScenario("steady-50", "many", count=50, ramp_s=0.5, tokens=10, tokens_per_s=10.0),
    ),
    settle_s=0.2,
    steady_ttft_pairs=2,
    profile_duration_s=2.0,
)
