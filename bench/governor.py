"""The governor live: the real CpuSampler steering a workload whose demand
follows the rate, toward a target host utilisation.

Workload: one worker process per CPU, each burning the CPU for a slice of
every 100 ms period, the slice being `base_duty * rate` of it (capped at the
whole period), so at the neutral rate the workload takes `base_duty` of the
host. Halfway through, a disturbance starts: one more process burning half of
one CPU, which the governor must make room for by slowing the workload down.

Printed: every second, the utilisation the governor measured and its rate;
then per phase (from below, after the disturbance) the seconds until
utilisation first came within 0.05 of the target, the mean absolute error
from `--settle` seconds into the phase to its end, and the oscillations
there: reversals of the rate's direction (steps over 0.05 either way) and
crossings of the target by the utilisation. The host is shared, so other
processes' load is part of what the governor sees.

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

from janus_policy.config import GovernorConfig
from janus_policy.runtime.governor import Governor

PERIOD_S = 0.1
BAND = 0.05
REVERSAL = 0.05


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


def run(config: GovernorConfig, seconds: int, base_duty: float) -> list[tuple[int, float, float]]:
    """(second, utilisation, rate) at the end of each second measured."""
    half = seconds // 2
    governor = Governor(config)
    rate = mp.Value("d", governor.rate)
    fixed = mp.Value("d", 1.0)
    stop = mp.Event()
    cpus = os.cpu_count() or 1
    workers = [mp.Process(target=burn, args=(rate, base_duty, stop)) for _ in range(cpus)]
    disturbance = mp.Process(target=burn, args=(fixed, 0.5, stop))
    print(
        f"{cpus} CPUs, {cpus} workers at {base_duty:.0%} duty * rate; target "
        f"{config.target_utilisation}; kp {config.kp} ki {config.ki}; "
        f"disturbance (half a CPU) from {half} s"
    )
    print(f"{'t/s':>4} {'util':>6} {'rate':>6}")
    series: list[tuple[int, float, float]] = []
    try:
        for worker in workers:
            worker.start()
        start = time.monotonic()
        second = 0
        while second < seconds:
            governor.tick()
            rate.value = governor.rate
            now = time.monotonic() - start
            if now >= second + 1:
                second += 1
                if second == half:
                    disturbance.start()
                util = governor.utilisation
                if util is not None:
                    series.append((second, util, governor.rate))
                    print(f"{second:4d} {util:6.3f} {governor.rate:6.3f}", flush=True)
            time.sleep(0.1 - (time.monotonic() - start) % 0.1)
    finally:
        stop.set()
        for process in [*workers, disturbance]:
            if process.pid is not None:
                process.join()
    return series


def report(name: str, phase: list[tuple[float, float]], target: float, settle: int) -> None:
    """The worst error and how long until back within BAND, then the figures
    from `settle` seconds into the phase to its end."""
    errors = [u - target for u, _ in phase]
    worst = max(range(len(errors)), key=lambda i: abs(errors[i]))
    back = next((i for i in range(worst, len(errors)) if abs(errors[i]) <= BAND), None)
    utils = [u for u, _ in phase][settle:]
    rates = [r for _, r in phase][settle:]
    print(
        f"{name}: worst error {errors[worst]:+.3f} at {worst + 1} s, within {BAND} "
        + ("never" if back is None else f"at {back + 1} s")
        + f"; from {settle + 1} s to {len(phase)} s: mean util {statistics.fmean(utils):.3f}, "
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
        report(name, [(u, r) for t, u, r in series if lo < t <= hi], args.target, args.settle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
