"""The governor against a simulated plant (a fake clock, no real time): host
utilisation = background + gain * rate, through a first-order lag, averaged
over each sample interval as /proc/stat deltas are, plus seeded noise."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from janus_policy.config import GovernorConfig
from janus_policy.runtime.governor import CpuSampler, Governor, PIController, read_cpu_times

TICK_S = 0.1
TARGET = 0.7
BAND = 0.03


@dataclass
class Plant:
    background: float
    gain: float
    lag_s: float = 0.5
    noise: float = 0.0
    seed: int = 0
    ticks: int = 0
    load: float = field(init=False)
    _sum: float = 0.0
    _span: float = 0.0
    _primed: bool = False

    def __post_init__(self) -> None:
        self.load = self.demand(1.0)
        self._rng = random.Random(self.seed)

    def demand(self, rate: float) -> float:
        return min(1.0, max(0.0, self.background + self.gain * rate))

    def advance(self, rate: float) -> None:
        self.load += (self.demand(rate) - self.load) * (1 - math.exp(-TICK_S / self.lag_s))
        self._sum += self.load * TICK_S
        self._span += TICK_S
        self.ticks += 1

    @property
    def now(self) -> float:
        return self.ticks * TICK_S  # exact on whole seconds: samples 1 s apart, not 1.1

    def sample(self) -> float | None:
        """The mean load since the last call, with noise; None on the first."""
        mean = self._sum / self._span if self._span else self.load
        self._sum = self._span = 0.0
        if not self._primed:
            self._primed = True
            return None
        return min(1.0, max(0.0, mean + self._rng.gauss(0.0, self.noise)))


@dataclass
class Trace:
    load: list[float] = field(default_factory=list)  # noise-free
    rate: list[float] = field(default_factory=list)


def config(**changes: Any) -> GovernorConfig:
    return replace(GovernorConfig(target_utilisation=TARGET), **changes)


def run(governor: Governor, plant: Plant, seconds: float, trace: Trace | None = None) -> Trace:
    """Ticks at 10 Hz; the trace has the load and rate at the end of each second."""
    trace = trace if trace is not None else Trace()
    ticks_per_second = round(1 / TICK_S)
    for tick in range(1, round(seconds / TICK_S) + 1):
        governor.tick()
        plant.advance(governor.rate)
        if tick % ticks_per_second == 0:
            trace.load.append(plant.load)
            trace.rate.append(governor.rate)
    return trace


def simulate(
    plant: Plant, seconds: float = 90.0, **changes: float | bool
) -> tuple[Governor, Trace]:
    governor = Governor(config(**changes), sampler=plant.sample, clock=lambda: plant.now)
    return governor, run(governor, plant, seconds)


def settled_at(trace: Trace, band: float = BAND) -> int | None:
    """The first second from which the load stays within band of the target."""
    inside = [abs(v - TARGET) <= band for v in trace.load]
    return next((i for i in range(len(inside)) if all(inside[i:])), None)


def reversals(values: list[float], threshold: float = 1e-3) -> int:
    steps = [b - a for a, b in pairwise(values) if abs(b - a) > threshold]
    return sum(1 for a, b in pairwise(steps) if a * b < 0)


# From above: at the neutral rate the host is over the target, so the
# governor slows down; from below it speeds up. Low and high plant gains.
PLANTS = {
    "above, low gain": Plant(background=0.6, gain=0.25),
    "above, high gain": Plant(background=0.1, gain=1.0),
    "below, low gain": Plant(background=0.1, gain=0.2),
    "below, high gain": Plant(background=0.0, gain=0.5),
}


@pytest.mark.parametrize("name", PLANTS)
def test_converges_without_overshoot(name: str) -> None:
    plant = replace(PLANTS[name])
    start = plant.load
    _, trace = simulate(plant)
    at = settled_at(trace)
    assert at is not None
    assert at <= 45, f"settled only at {at} s"
    assert abs(trace.load[-1] - TARGET) < 0.005
    # Overshoot: how far past the target, on the far side from the start.
    beyond = [(v - TARGET) * (1 if start < TARGET else -1) for v in trace.load]
    assert max(beyond) < 0.01
    assert reversals(trace.rate[at:]) <= 1


def noisy_tail(plant: Plant, **changes: float) -> list[float]:
    """The noise-free load over the last 90 of 135 s, the measurement noisy."""
    _, trace = simulate(replace(plant, noise=0.03, seed=7), seconds=135, **changes)
    return trace.load[45:]


@pytest.mark.parametrize("name", PLANTS)
def test_noise_does_not_make_it_oscillate(name: str) -> None:
    # The controller's own swing of the load stays under the measurement noise (0.03).
    tail = noisy_tail(PLANTS[name])
    assert abs(statistics.fmean(tail) - TARGET) < 0.01
    assert statistics.fmean(abs(v - TARGET) for v in tail) < 0.015
    assert max(abs(v - TARGET) for v in tail) < 0.05


def test_the_oscillation_checks_catch_an_aggressive_controller() -> None:
    """The measures above are not vacuous: a proportional gain too high for
    the one-interval delay of the measurement swings the rate."""
    plant = PLANTS["above, high gain"]
    _, calm = simulate(replace(plant), kp=4.0)
    assert settled_at(calm) is None
    assert reversals(calm.rate[30:]) > 20
    tail = noisy_tail(plant, kp=4.0)
    assert statistics.fmean(abs(v - TARGET) for v in tail) > 0.1


def test_rejects_a_step_disturbance() -> None:
    plant = replace(PLANTS["below, high gain"])
    governor, _ = simulate(plant, seconds=60)
    before = governor.rate
    plant.background += 0.2  # another process takes a fifth of the host
    trace = run(governor, plant, 60)
    assert governor.rate == pytest.approx(before - 0.4, abs=0.01)
    at = settled_at(trace)
    assert at is not None
    assert at <= 20


def test_anti_windup_recovers_promptly_after_saturation() -> None:
    # Ten minutes of a host busy past the target whatever the pace: the rate
    # sits at min_rate. Then the background load goes.
    # sits at min_rate. Then the background load goes: it recovers about as
    # fast as from a fresh start at the neutral rate, not held down by ten
    # minutes of integrated error.
    plant = Plant(background=0.95, gain=0.2)
    governor, _ = simulate(plant, seconds=600)
    assert governor.rate == GovernorConfig().min_rate
    plant.background = 0.2
    trace = run(governor, plant, 90)
    _, fresh = simulate(Plant(background=0.2, gain=0.2))
    assert trace.rate[2] > trace.rate[1] > governor.config.min_rate
    at, fresh_at = settled_at(trace), settled_at(fresh)
    assert at is not None
    assert fresh_at is not None
    assert at <= fresh_at + 10


def test_clamps_to_min_and_max_rate() -> None:
    pi = PIController(TARGET, kp=0.2, ki=0.5, min_rate=0.1, max_rate=3.0)
    for _ in range(50):
        pi.update(0.0, 1.0)
    assert pi.rate == 3.0
    for _ in range(50):
        pi.update(1.0, 1.0)
    assert pi.rate == 0.1


def test_integral_does_not_grow_while_clamped() -> None:
    pi = PIController(TARGET, kp=0.0, ki=1.0, min_rate=0.5, max_rate=2.0)
    for _ in range(1000):
        pi.update(0.0, 1.0)
    assert pi.rate == 2.0
    # One step of the opposite error takes it off the limit at once.
    assert pi.update(1.0, 1.0) < 2.0


def test_neutral_at_target_and_direction() -> None:
    pi = PIController(0.5, kp=0.2, ki=0.5, min_rate=0.05, max_rate=4.0)
    assert pi.rate == 1.0
    assert pi.update(0.5, 1.0) == 1.0
    assert pi.update(0.3, 1.0) > 1.0
    pi = PIController(0.5, kp=0.2, ki=0.5, min_rate=0.05, max_rate=4.0)
    assert pi.update(0.9, 1.0) < 1.0


def test_disabled_stays_neutral_and_samples_nothing() -> None:
    calls: list[None] = []

    def sampler() -> float:
        calls.append(None)
        return 1.0

    now = [0.0]
    governor = Governor(config(enabled=False), sampler=sampler, clock=lambda: now[0])
    for _ in range(100):
        governor.tick()
        now[0] += 1.0
    assert governor.rate == 1.0
    assert calls == []
    assert governor.interval(5.0) == 5.0
    assert governor.concurrency(4) == 4
    assert governor.status() == {
        "enabled": False,
        "rate": 1.0,
        "utilisation": None,
        "target": TARGET,
    }


def test_samples_once_per_interval_on_a_jittery_tick() -> None:
    calls: list[float] = []
    now = [0.0]

    def sampler() -> float:
        calls.append(now[0])
        return 0.9

    governor = Governor(config(sample_interval_s=1.0), sampler=sampler, clock=lambda: now[0])
    rng = random.Random(3)
    for tick in range(1000):  # 100 s at 10 Hz, each tick up to 40 ms late
        now[0] = tick / 10 + rng.uniform(0.0, 0.04)
        governor.tick()
    # On a grid of due times: a late tick does not delay the samples after it.
    assert len(calls) == 100
    assert all(0.85 < b - a < 1.15 for a, b in pairwise(calls))
    assert governor.rate < 1.0
    assert governor.utilisation == 0.9


def test_a_stall_restarts_the_sampling_grid() -> None:
    calls: list[float] = []
    now = [0.0]

    def sampler() -> float:
        calls.append(now[0])
        return 0.7

    governor = Governor(config(sample_interval_s=1.0), sampler=sampler, clock=lambda: now[0])
    for t in (0.0, 1.0, 10.5, 10.6, 11.4, 11.5, 12.5):
        now[0] = t
        governor.tick()
    assert calls == [0.0, 1.0, 10.5, 11.5, 12.5]


def test_no_measurement_leaves_the_rate_alone() -> None:
    readings: list[float | None] = [0.2, 0.2, None, None, None, 0.7]
    now = [0.0]
    governor = Governor(
        config(kp=0.0, ki=0.5), sampler=lambda: readings.pop(0), clock=lambda: now[0]
    )
    for _ in range(2):
        governor.tick()
        now[0] += 1.0
    rate = governor.rate
    assert rate > 1.0
    for _ in range(3):
        governor.tick()
        now[0] += 1.0
        assert governor.rate == rate
        assert governor.utilisation == 0.2
    governor.tick()
    assert governor.utilisation == 0.7
    assert governor.rate == pytest.approx(rate)  # at the target the integral holds


def test_a_stalled_loop_moves_the_integral_by_at_most_two_intervals() -> None:
    now = [0.0]
    governor = Governor(config(kp=0.0, ki=0.5), sampler=lambda: 0.2, clock=lambda: now[0])
    governor.tick()  # ki * error * one interval: 0.5 * 0.5 * 1
    assert governor.rate == pytest.approx(1.25)
    now[0] += 3600.0
    governor.tick()
    assert governor.rate == pytest.approx(1.25 + 0.5)


@pytest.mark.parametrize(
    ("rate", "maximum", "expected"),
    [(1.0, 4, 4), (3.0, 4, 4), (0.9, 10, 9), (0.5, 4, 2), (0.74, 4, 2), (0.05, 4, 1), (0.5, 1, 1)],
)
def test_concurrency(rate: float, maximum: int, expected: int) -> None:
    governor = Governor(config(), sampler=lambda: None)
    governor.rate = rate
    assert governor.concurrency(maximum) == expected


def test_interval_and_status() -> None:
    now = [0.0]
    governor = Governor(config(kp=0.0, ki=1.0), sampler=lambda: 0.2, clock=lambda: now[0])
    governor.tick()
    assert governor.rate == pytest.approx(1.5)
    assert governor.interval(6.0) == pytest.approx(4.0)
    assert governor.status() == {
        "enabled": True,
        "rate": 1.5,
        "utilisation": 0.2,
        "target": TARGET,
    }


PROC_STAT_1 = """\
cpu  1000 50 300 8000 100 0 50 0 20 0
cpu0 500 25 150 4000 50 0 25 0 10 0
cpu1 500 25 150 4000 50 0 25 0 10 0
intr 12345 0 0
ctxt 67890
"""
# Since then: 300 user, 100 system, 500 idle, 100 iowait: 400 busy of 1000.
PROC_STAT_2 = PROC_STAT_1.replace("cpu  1000 50 300 8000 100", "cpu  1300 50 400 8500 200")


def test_read_cpu_times_from_canned_text() -> None:
    # busy = user + nice + system + irq + softirq + steal; guest is in user already.
    assert read_cpu_times(PROC_STAT_1) == (1400, 9500)
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        read_cpu_times("cpu0 1 2 3 4\n")


def test_cpu_sampler_on_canned_files(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(PROC_STAT_1)
    sampler = CpuSampler(stat)
    assert sampler() is None  # primes
    assert sampler() is None  # no time has passed
    stat.write_text(PROC_STAT_2)
    assert sampler() == pytest.approx(0.4)
    stat.write_text("garbage\n")
    assert sampler() is None
    stat.unlink()
    assert sampler() is None


def test_cpu_sampler_on_real_proc_stat() -> None:
    sampler = CpuSampler()
    assert sampler() is None
    values: list[float] = []
    while len(values) < 3:
        # Burn a little CPU so jiffies advance without sleeping on the clock.
        sum(i * i for i in range(200_000))
        value = sampler()
        if value is not None:
            values.append(value)
    assert all(0.0 <= v <= 1.0 for v in values)
