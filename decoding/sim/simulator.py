"""A discrete-event simulator of edge-cloud serving, speculative or cloud-only (DSD-Sim style).

E edge devices send requests; C cloud servers verify drafted windows (speculative mode)
or decode whole answers (cloud-only mode). Time comes from a `LatencyProfile`: draft cost
per token on the edge, verification cost as a line in the tokens a cloud pass holds
(batched jobs add their tokens: flat on a GPU, steep on this CPU), cloud decode steps as a
line in the sequences they advance (continuous batching), prompt prefill, and the link's
round trip with jitter. Acceptance is drawn per window position at the profile's rates,
with the run's seed. Whether a round has a proposal follows the answer's stretches: after
a round that proposed, the next proposes at the profile's rate; a stretch without
proposals, which the cloud decodes alone, ends at each next token with the profile's
`resume` chance for its length so far (a round records where, as `SpeculativeLLM` does
from its lookups). The policy is told before choosing its window whether the round has a
proposal, as a free drafter tells it. (A profile without stretch rates, fitted before
they were recorded, draws proposals per round to match its ``unproposed`` share.)

Speculative rounds use the same `WindowPolicy` objects as the real `SpeculativeLLM`, fed
the same `Round` records (verification time includes queueing at the cloud; the record
also says how much of it was queueing and how many other tokens shared the pass, as a
cloud that reports its queue would). Cloud servers take work join-shortest-queue; a
server collects the jobs that arrive within ``batch_window_s`` of the first, up to
``max_batch``, and runs them as one pass.

A profile measured on a real run (benchmarks/speculative.py writes one) lets the
simulator predict that run; profiles of other deployments are JSON files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
import simpy
from pydantic import BaseModel, ConfigDict, Field

from relaygraph.decoding.rounds import Round
from relaygraph.decoding.window import (
    EARLIER_ROUNDS,
)
from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Generator

    from relaygraph.decoding.sim.profile import LatencyProfile
    from relaygraph.decoding.window import WindowPolicy

_T = TypeVar("_T")

Mode = Literal["speculative", "cloud-only"]


class SimConfig(BaseModel):
    """The fleet and the workload."""

    model_config = ConfigDict(extra="forbid")

    edges: int = Field(default=1, ge=1)
    clouds: int = Field(default=1, ge=1)
    requests_per_edge: int = Field(default=10, ge=1)
    output_tokens: list[int] = Field(default_factory=lambda: [64], min_length=1)
    """Answer lengths, used in turn by each edge's requests."""
    think_s: float = Field(default=0.0, ge=0)
    """Pause between one edge's requests."""
    batch_window_s: float = Field(default=0.0, ge=0)
    max_batch: int = Field(default=16, ge=1)
    seed: int = 0


class SimResult(BaseModel):
    """What a simulated run measured."""

    mode: Mode
    window_policy: str | None
    requests: int
    tokens: int
    makespan_s: float
    throughput_tok_s: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    time_per_token_s: float
    """Mean over requests of latency / answer tokens."""
    cloud_utilization: float
    """Mean share of the run each cloud server was busy."""
    acceptance_rate: float | None = None
    mean_window: float | None = None


@dataclass(slots=True)
class _Job:
    """One verification (or, with ``steps``, a stretch the target decodes alone): its
    tokens, any prompt prefill it carries, and its completion."""

    tokens: int
    prefill_s: float
    done: simpy.Event
    steps: int = 0
    """Decode steps of a round without a proposal."""
    started: float = 0.0
    """When its pass began (the cloud's queue wait ends here)."""
    shared_tokens: int = 0
    """Tokens of the other jobs in its pass."""


@dataclass(slots=True)
class _Cloud:
    """One server: a queue of jobs, served in batches."""

    env: simpy.Environment
    profile: LatencyProfile
    config: SimConfig
    queue: simpy.Store = field(init=False)
    busy_s: float = 0.0
    pending: int = 0

    def __post_init__(self) -> None:
        self.queue = simpy.Store(self.env)

    def verify_loop(self) -> Generator[simpy.Event, object, None]:
        while True:
            first = yield self.queue.get()
            batch = [first]
            if self.config.batch_window_s > 0:
                yield self.env.timeout(self.config.batch_window_s)
            while self.queue.items and len(batch) < self.config.max_batch:
                batch.append((yield self.queue.get()))
            jobs: list[_Job] = batch  # type: ignore[assignment]
            tokens = sum(job.tokens for job in jobs)
            for job in jobs:
                job.started = self.env.now
                job.shared_tokens = tokens - job.tokens
            p = self.profile
            # Jobs the target decodes alone advance together, one batched step at a time
            # (as cloud-only sequences do), after one request overhead for the pass.
            solo = [job.steps for job in jobs if job.steps]
            decoding = (
                p.solo_overhead_s
                + sum(
                    p.decode_base_s + p.decode_per_seq_s * sum(n > step for n in solo)
                    for step in range(max(solo))
                )
                if solo
                else 0.0
            )
            service = (
                (p.verify_base_s + p.verify_per_token_s * tokens if tokens else 0.0)
                + decoding
                + sum(job.prefill_s for job in jobs)
            )
            yield self.env.timeout(service)
            self.busy_s += service
            for job in jobs:
                self.pending -= 1
                job.done.succeed()


def simulate(
    profile: LatencyProfile,
    config: SimConfig,
    mode: Mode = "speculative",
    window: WindowPolicy | None = None,
) -> SimResult:
    """Run the fleet to the end of its workload.

    Raises:
        ConfigError: Speculative mode without a window policy.
    """
    if mode == "speculative" and window is None:
        raise ConfigError("speculative simulation needs a window policy", parameter="window")
    env = simpy.Environment()
    run = _Run(env, profile, config, random.Random(config.seed))
    if mode == "speculative":
        assert window is not None
        clouds = [_Cloud(env, profile, config) for _ in range(config.clouds)]
        for cloud in clouds:
            env.process(cloud.verify_loop())
        for edge in range(config.edges):
            env.process(_speculative_edge(run, edge, clouds, window))
        env.run()
        busy = [c.busy_s for c in clouds]
    else:
        decoder = _CloudDecoder(env, profile, config)
        for edge in range(config.edges):
            env.process(_cloud_only_edge(run, edge, decoder))
        env.run()
        busy = decoder.busy
    return _result(mode, window, env.now, run, busy)


@dataclass(slots=True)
class _Run:
    """What every edge process shares: the clock, the settings, the seeded draws, and
    what was measured."""

    env: simpy.Environment
    profile: LatencyProfile
    config: SimConfig
    rng: random.Random
    latencies: list[tuple[float, int]] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)

    def one_way(self) -> float:
        return max(0.0, self.profile.rtt_s / 2 + self.rng.gauss(0.0, self.profile.jitter_s))

    def requests(self, edge: int) -> list[tuple[int, int]]:
        """(kind, answer length) of one edge's requests: the kinds, and the lengths, in
        turn, offset per edge (a measured run's prompt i gives both kind and length i)."""
        n = len(self.config.output_tokens)
        indices = [edge + i for i in range(self.config.requests_per_edge)]
        return [(i, self.config.output_tokens[i % n]) for i in indices]


def _speculative_edge(
    run: _Run, edge: int, clouds: list[_Cloud], window: WindowPolicy
) -> Generator[simpy.Event, object, None]:
    env, profile = run.env, run.profile
    carried: list[Round] = []
    for kind, length in run.requests(edge):
        began = env.now
        history: list[Round] = []
        produced = 0
        stretches = bool(profile.resume)
        answer = _Answer(run, kind)
        while produced < length:
            left = length - produced
            if stretches:  # the policy knows whether the round has a proposal
                offered = min(window.largest, left) if answer.proposing else 0
                k = max(1, min(window.next_window(history, carried, offered), left))
                drafted = k if answer.proposing else 0
            else:
                k = max(1, min(window.next_window(history, carried), left))
                drafted = k if run.rng.random() < profile.proposes(k, kind) else 0
            draft_s = profile.draft_per_token_s * drafted
            yield env.timeout(draft_s)
            up, down = run.one_way(), run.one_way()
            yield env.timeout(up)
            cloud = min(clouds, key=lambda c: c.pending)
            # the first pass also reads the prompt; without a proposal the target decodes
            steps = 0 if drafted else min(k + 1, length - produced)
            prefill = 0.0 if history else profile.prefill_s
            job = _Job(drafted + 1 if drafted else 0, prefill, env.event(), steps=steps)
            cloud.pending += 1
            arrived = env.now
            yield cloud.queue.put(job)
            yield job.done
            verify_s = env.now - arrived
            yield env.timeout(down)
            accepted = 0
            while accepted < drafted and run.rng.random() < profile.rate_at(accepted, kind):
                accepted += 1
            if drafted:
                answer.proposed(accepted)
            resume_at = 0 if drafted else answer.decoded_alone(steps)
            queue_s = job.started - arrived
            shared = job.shared_tokens
            history.append(
                Round(
                    k,
                    drafted,
                    accepted,
                    draft_s,
                    verify_s,
                    up + down,
                    queue_s,
                    shared,
                    steps,
                    resume_at,
                )
            )
            produced += steps or accepted + 1
        run.rounds.extend(history)
        carried = (carried + history)[-EARLIER_ROUNDS:]
        run.latencies.append((env.now - began, length))
        if run.config.think_s:
            yield env.timeout(run.config.think_s)


@dataclass(slots=True)
class _Answer:
    """Where one simulated answer stands with its drafter: whether the next round has a
    proposal, and how many tokens into a stretch without proposals it is."""

    run: _Run
    kind: int
    proposing: bool = field(init=False)
    gap: int = 0

    def __post_init__(self) -> None:
        self.proposing = self.run.rng.random() < self.run.profile.proposing_at(self.kind)

    def proposed(self, accepted: int) -> None:
        """A round verified a proposal, ``accepted`` tokens of it stood."""
        self.gap = 0 if accepted else self.gap + 1
        self.proposing = self.run.rng.random() < self.run.profile.proposing_at(self.kind)

    def decoded_alone(self, steps: int) -> int:
        """The cloud decoded ``steps`` tokens alone: where among them the stretch ended,
        as a `Round.resume_at` (0: at none before the last)."""
        profile, rng = self.run.profile, self.run.rng
        if not profile.resume:
            return 0
        ended = next(
            (m for m in range(1, steps + 1) if rng.random() < profile.resume_at(self.gap + m)), 0
        )
        self.proposing, self.gap = (True, 0) if ended else (False, self.gap + steps)
        return ended if ended < steps else 0


@dataclass(slots=True)
class _Sequence:
    left: int
    done: simpy.Event
    new: bool = True


@dataclass(slots=True)
class _CloudDecoder:
    """Cloud-only serving with continuous batching: each server advances its active
    sequences one token per step; a new request joins the least loaded server at its
    next step and pays the prefill there."""

    env: simpy.Environment
    profile: LatencyProfile
    config: SimConfig
    busy: list[float] = field(init=False)
    active: list[list[_Sequence]] = field(init=False)
    wakeups: list[simpy.Event | None] = field(init=False)

    def __post_init__(self) -> None:
        self.busy = [0.0] * self.config.clouds
        self.active = [[] for _ in range(self.config.clouds)]
        self.wakeups = [None] * self.config.clouds
        for server in range(self.config.clouds):
            self.env.process(self._serve(server))

    def submit(self, length: int) -> simpy.Event:
        server = min(range(self.config.clouds), key=lambda s: len(self.active[s]))
        sequence = _Sequence(length, self.env.event())
        self.active[server].append(sequence)
        wake = self.wakeups[server]
        if wake is not None and not wake.triggered:
            wake.succeed()
        return sequence.done

    def _serve(self, server: int) -> Generator[simpy.Event, object, None]:
        p = self.profile
        while True:
            if not self.active[server]:
                wake = self.env.event()
                self.wakeups[server] = wake
                yield wake
            batch = self.active[server]
            prefills = sum(s.new for s in batch)
            step = p.decode_base_s + p.decode_per_seq_s * len(batch) + p.prefill_s * prefills
            yield self.env.timeout(step)
            self.busy[server] += step
            for sequence in list(batch):
                sequence.new = False
                sequence.left -= 1
                if sequence.left <= 0:
                    batch.remove(sequence)
                    sequence.done.succeed()


def _cloud_only_edge(
    run: _Run, edge: int, decoder: _CloudDecoder
) -> Generator[simpy.Event, object, None]:
    env = run.env
    for _, length in run.requests(edge):
        began = env.now
        yield env.timeout(run.one_way())
        yield decoder.submit(length)
        yield env.timeout(run.one_way())
        run.latencies.append((env.now - began, length))
        if run.config.think_s:
            yield env.timeout(run.config.think_s)


def _result(
    mode: Mode, window: WindowPolicy | None, makespan: float, run: _Run, busy: list[float]
) -> SimResult:
    seconds = np.array([s for s, _ in run.latencies])
    tokens = sum(n for _, n in run.latencies)
    drafted = sum(r.drafted for r in run.rounds)
    return SimResult(
        mode=mode,
        window_policy=window.name if window is not None and mode == "speculative" else None,
        requests=len(run.latencies),
        tokens=tokens,
        makespan_s=makespan,
        throughput_tok_s=tokens / makespan if makespan else 0.0,
        latency_p50_s=float(np.percentile(seconds, 50)),
        latency_p95_s=float(np.percentile(seconds, 95)),
        latency_p99_s=float(np.percentile(seconds, 99)),
        time_per_token_s=float(np.mean([s / n for s, n in run.latencies])),
        cloud_utilization=float(np.mean(busy) / makespan) if makespan else 0.0,
        acceptance_rate=sum(r.accepted for r in run.rounds) / drafted if drafted else None,
        mean_window=float(np.mean([r.window for r in run.rounds])) if run.rounds else None,
    )
