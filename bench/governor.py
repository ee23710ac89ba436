"""The governor live: the real CpuSampler steering a workload whose demand
follows the rate, toward a target host utilisation.

Workload: one worker process per CPU, each burning the CPU for a slice of
every 100 ms period, the slice being `base_duty * rate` of it (capped at the
whole period), so at the neutral rate the workload takes `base_duty` of the
host. Halfway through, a disturbance starts: one more process burning half of
one CPU, which the governor must make room for by slowing the workload down.

Printed: at each sample (every second), the host utilisation the governor
measured, the share of it this benchmark's processes took (from their
/proc/PID/stat), the rest (other processes: the host may be shared, and
their load is part of what the governor steers against) and the new rate.
Then per phase (from below; after the disturbance): the worst error and when
utilisation came back within 0.05 of the target, and from `--settle` seconds
into the phase to its end the mean absolute error and the oscillations:
reversals of the rate's direction (steps over 0.05 either way) and crossings
of the target by the utilisation.

    python bench/governor.py [--target 0.5] [--seconds 60] [--kp K] [--ki K]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import replace
from itertools import pairwise
from multiprocessing.synchronize import Event
from pathlib import Path

from janus_policy.config import GovernorConfig
from janus_policy.runtime.governor import CpuSampler, Governor

PERIOD_S = 0.1
BAND = 0.05
REVERSAL = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


def burn(rate: mp.sharedctypes.Synchronized[float], base_duty: float, stop: Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        busy = min(1.0, base_duty * rate.value) * PERIOD_S
        while time.perf_counter() - start < busy:
            pass
        rest = PERIOD_S - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)


def reversals(values: list[float]) -> int:
    """Changes of direction, counting only steps larger than REVERSAL."""
    steps = [b - a for a, b in pairwise(values) if abs(b - a) > REVERSAL]
    return sum(1 for a, b in pairwise(steps) if a * b < 0)


def crossings(values: list[float], target: float) -> int:
    sides = [v > target for v in values]
    return sum(1 for a, b in pairwise(sides) if a != b)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, from /proc/PID/stat."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


Sample = tuple[float, float, float, float]  # time, utilisation, others' share, rate


def run(config: GovernorConfig, seconds: int, base_duty: float) -> list[Sample]:
    half = seconds // 2
    rate = mp.Value("d", 1.0)
    fixed = mp.Value("d", 1.0)
    stop = mp.Event()
    cpus = os.cpu_count() or 1
    workers = [mp.Process(target=burn, args=(rate, base_duty, stop)) for _ in range(cpus)]
    disturbance = mp.Process(target=burn, args=(fixed, 0.5, stop))
    processes = [*workers, disturbance]
    cpu = CpuSampler()
    own = [0.0, 0.0]  # CPU seconds and clock at the last sample
    shares: list[float] = []

    def sample() -> float | None:
        now, used = time.monotonic(), cpu_seconds([p.pid for p in processes if p.pid])
        shares.append((used - own[0]) / ((now - own[1]) * cpus))
        own[:] = [used, now]
        return cpu()

    governor = Governor(config, sampler=sample)
    print(
        f"{cpus} CPUs, {cpus} workers at {base_duty:.0%} duty * rate; target "
        f"{config.target_utilisation}; kp {config.kp} ki {config.ki}; "
        f"disturbance (half a CPU) from {half} s"
    )
    print(f"{'t/s':>5} {'host':>6} {'ours':>6} {'others':>6} {'rate':>6}")
    series: list[Sample] = []
    try:
        for worker in workers:
            worker.start()
        start = time.monotonic()
        while (now := time.monotonic() - start) < seconds:
            if now >= half and disturbance.pid is None:
                disturbance.start()
            before = len(shares)
            governor.tick()
            rate.value = governor.rate
            util = governor.utilisation
            if len(shares) > before and util is not None:
                series.append((now, util, util - shares[-1], governor.rate))
                print(
                    f"{now:5.1f} {util:6.3f} {shares[-1]:6.3f} {util - shares[-1]:6.3f} "
                    f"{governor.rate:6.3f}",
                    flush=True,
                )
            time.sleep(0.1 - (time.monotonic() - start) % 0.1)
    finally:
        stop.set()
        for process in processes:
            if process.pid is not None:
                process.join()
    return series


def report(name: str, phase: list[Sample], target: float, settle: float) -> None:
    """The worst error and when back within BAND; from `settle` seconds on,
    the error and oscillations (times from the start of the phase)."""
    worst = max(phase, key=lambda x: abs(x[1] - target))
    back = next((x[0] for x in phase if x[0] >= worst[0] and abs(x[1] - target) <= BAND), None)
    scored = [x for x in phase if x[0] >= settle]
    utils = [u for _, u, _, _ in scored]
    rates = [r for _, _, _, r in scored]
    print(
        f"{name}: worst error {worst[1] - target:+.3f} at {worst[0]:.0f} s, within {BAND} "
        + ("never" if back is None else f"from {back:.0f} s")
        + f"; {settle:.0f}-{phase[-1][0]:.0f} s: util {statistics.fmean(utils):.3f} "
        f"(others {statistics.fmean(o for _, _, o, _ in scored):.3f}), "
        f"MAE {statistics.fmean(abs(u - target) for u in utils):.3f}, "
        f"rate {statistics.fmean(rates):.2f} [{min(rates):.2f}..{max(rates):.2f}], "
        f"{reversals(rates)} rate reversals, {crossings(utils, target)} target crossings"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = GovernorConfig()
    ap.add_argument("--target", type=float, default=0.5, help="target utilisation (0.5)")
    ap.add_argument("--seconds", type=int, default=60, help="run time, two phases (60)")
    ap.add_argument("--settle", type=int, default=10, help="seconds per phase not scored (10)")
    ap.add_argument("--base-duty", type=float, default=0.3, help="workload at rate 1 (0.3)")
    ap.add_argument("--kp", type=float, default=defaults.kp, help=f"({defaults.kp})")
    ap.add_argument("--ki", type=float, default=defaults.ki, help=f"({defaults.ki})")
    args = ap.parse_args(argv)
    half = args.seconds // 2
    if not 0 < args.target < 1 or args.settle >= half:
        ap.error("--target must be in (0, 1) and --settle below half of --seconds")

    config = replace(defaults, target_utilisation=args.target, kp=args.kp, ki=args.ki)
    series = run(config, args.seconds, args.base_duty)

    for name, lo, hi in (("from below", 0, half), ("disturbed", half, args.seconds)):
        phase = [(t - lo, u, o, r) for t, u, o, r in series if lo <= t < hi]
        report(name, phase, args.target, args.settle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
