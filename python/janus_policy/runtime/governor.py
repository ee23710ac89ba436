"""The governor: a PI controller on host CPU utilisation that sets the pace of
the thinking cycle and of dispatch.

The controlled quantity is a rate, 1.0 being the neutral pace (the configured
cycle interval and concurrency limit). Utilisation is read from /proc/stat as
the busy share of all CPUs over the last sample interval, so what the
controller sees lags its action by about one interval; that delay, not the
workload, dominates the loop, which is why the integral term does most of the
work and the proportional one is kept small."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from janus_policy.config import GovernorConfig

__all__ = ["CpuSampler", "Governor", "PIController", "read_cpu_times"]

PROC_STAT = Path("/proc/stat")


def read_cpu_times(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate `cpu` line of /proc/stat."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal; guest and
            # guest_nice after them are already counted in user and nice.
            values = [int(v) for v in fields[1:9]]
            total = sum(values)
            idle = sum(values[3:5])  # idle + iowait
            return total - idle, total
    raise ValueError("/proc/stat has no aggregate cpu line")


class CpuSampler:
    """Host CPU utilisation, 0 to 1, over the time since the previous call.
    The first call only primes it; a failed read is no measurement (None)
    rather than an error, so the daemon keeps its pace instead of crashing."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self._path = path
        self._last: tuple[int, int] | None = None

    def __call__(self) -> float | None:
        try:
            busy, total = read_cpu_times(self._path.read_text())
        except (OSError, ValueError):
            return None
        last = self._last
        if last is not None and total <= last[1]:
            return None  # no tick elapsed: keep the older sample for a longer window
        self._last = (busy, total)
        if last is None:
            return None
        return min(1.0, max(0.0, (busy - last[0]) / (total - last[1])))


class PIController:
    """rate = 1 + kp·e + ∫ki·e dt with e = target - measured, clamped to
    [min_rate, max_rate]. Anti-windup by conditional integration: while the
    output is clamped, an error that pushes further into the limit does not
    grow the integral, so the rate leaves a limit as soon as the error turns."""

    def __init__(
        self, target: float, kp: float, ki: float, min_rate: float, max_rate: float
    ) -> None:
        self.target = target
        self.kp = kp
        self.ki = ki
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.rate = min(max(1.0, min_rate), max_rate)
        self._integral = 0.0

    def update(self, measured: float, dt: float) -> float:
        error = self.target - measured
        integral = self._integral + self.ki * error * dt
        raw = 1.0 + self.kp * error + integral
        self.rate = min(max(raw, self.min_rate), self.max_rate)
        winding = (raw > self.max_rate and error > 0) or (raw < self.min_rate and error < 0)
        if not winding:
            self._integral = integral
        return self.rate


class Governor:
    """Samples utilisation once every `sample_interval_s` from `tick` (the
    daemon's 10 Hz escapement; a no-op between samples) and turns the rate
    into a cycle interval and a concurrency limit. Disabled, the rate stays
    1.0 and nothing is sampled."""

    def __init__(
        self,
        config: GovernorConfig,
        sampler: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._sampler = sampler if sampler is not None else CpuSampler()
        self._clock = clock
        self._controller = PIController(
            config.target_utilisation, config.kp, config.ki, config.min_rate, config.max_rate
        )
        self.rate = 1.0
        self.utilisation: float | None = None
        self._last_sample: float | None = None
        self._due: float | None = None

    def tick(self) -> None:
        if not self.config.enabled:
            return
        now = self._clock()
        interval = self.config.sample_interval_s
        if self._due is not None and now < self._due:
            return
        # Due times on a grid, so a tick that comes a little late does not
        # push every later sample back by it; after a stall, restart the grid.
        due = now if self._due is None else self._due
        self._due = due + interval if now - due < interval else now + interval
        last, self._last_sample = self._last_sample, now
        measured = self._sampler()
        if measured is None:
            return
        self.utilisation = measured
        # A stalled loop (a suspended process, a long tick) must not move the
        # integral by many intervals' worth in one step it never observed.
        dt = interval if last is None else min(now - last, 2 * interval)
        self.rate = self._controller.update(measured, dt)

    def interval(self, base_s: float) -> float:
        return base_s / self.rate

    def concurrency(self, maximum: int) -> int:
        return max(1, min(maximum, math.floor(maximum * self.rate)))

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.config.enabled,
            "rate": round(self.rate, 4),
            "utilisation": None if self.utilisation is None else round(self.utilisation, 4),
            "target": self.config.target_utilisation,
        }
