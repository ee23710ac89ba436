"""Sandboxed `/bin/true`: the extension against raw bwrap, in one run.

Three variants, timed round-robin (each iteration runs all three, in a
rotating order, so drift in the machine's load hits them alike):

  a  raw bwrap    `subprocess.run([bwrap, *options, "--", *command])`: the same
                  argv bwrap gets from the extension, with the options from
                  `_sandbox.bwrap_options(profile)` on its command line and
                  the command from `_sandbox.bwrap_command` (/bin/true started
                  through prlimit, which sets this sandbox's RLIMIT_NPROC);
                  the seccomp program on fd 4 (a memfd) and an info pipe on
                  fd 5, as uid `run_as` when root, empty environment
  b  ext. bwrap   `_sandbox.spawn(["/bin/true"], profile, limits, method="bwrap")`
                  then `.wait()`: the same bwrap and options, plus rlimits,
                  output capture, the timeout watch and rusage
  c  ext. native  the same through `method="native"`: the extension makes the
                  namespaces itself, no bwrap process

Each time is wall clock around the whole call, measured in this process.
Targets: b/a <= 1.10 (the extension adds at most 10% to raw bwrap) and
c/a <= 0.5 (the native fallback is at least twice as fast as raw bwrap),
both on medians.

    python bench/sandbox_spawn.py [--iterations N] [--warmup N] [--format text|json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from janus_policy import _sandbox
from janus_policy.execution.sandbox import Limits, Profile, SandboxRunner

SECCOMP_FD = 4
INFO_FD = 5
TARGETS = {"b/a": 1.10, "c/a": 0.5}
NAMES = {"a": "raw bwrap", "b": "extension, bwrap", "c": "extension, native"}


def _fd_free(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@dataclass
class RawBwrap:
    """Variant a: bwrap started by subprocess with the extension's options."""

    bwrap: str
    options: list[str]
    command: Callable[[list[str]], list[str]]
    run_as: tuple[int, int] | None
    seccomp: bytes
    fds_placed: bool = False
    info_r: int = -1

    def __post_init__(self) -> None:
        if _fd_free(SECCOMP_FD) and _fd_free(INFO_FD):
            memfd = os.memfd_create("janus-bench-seccomp", 0)  # no CLOEXEC: bwrap inherits it
            os.write(memfd, self.seccomp)
            os.dup2(memfd, SECCOMP_FD, inheritable=True)
            os.close(memfd)
            r, w = os.pipe()
            os.dup2(w, INFO_FD, inheritable=True)
            os.close(w)
            os.set_blocking(r, False)
            self.info_r = r
            self.fds_placed = True
        else:
            drop = {"--add-seccomp-fd", "--info-fd"}
            opts, skip = [], False
            for o in self.options:
                if skip:
                    skip = False
                elif o in drop:
                    skip = True
                else:
                    opts.append(o)
            self.options = opts

    @property
    def note(self) -> str:
        if self.fds_placed:
            return "seccomp program on fd 4 (memfd), info pipe on fd 5"
        return "fds 4/5 were taken: --add-seccomp-fd 4 and --info-fd 5 DROPPED from variant a"

    def run(self, argv: list[str], capture: bool = False) -> bytes:
        if self.fds_placed:
            os.lseek(SECCOMP_FD, 0, os.SEEK_SET)  # bwrap reads the program to EOF
        ids: dict[str, Any] = {}
        if self.run_as:
            ids = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        p = subprocess.run(
            [self.bwrap, *self.options, "--", *self.command(argv)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={},
            pass_fds=(SECCOMP_FD, INFO_FD) if self.fds_placed else (),
            check=False,
            **ids,
        )
        if self.fds_placed:
            try:
                while os.read(self.info_r, 65536):
                    pass
            except BlockingIOError:
                pass
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"raw bwrap exited {p.returncode}: {err}")
        return p.stdout or b""

    def __call__(self) -> None:
        self.run(["/bin/true"])


@dataclass
class Extension:
    """Variants b and c: spawn + wait through the extension."""

    method: str
    profile: Profile
    limits: Limits
    bwrap: str | None
    run_as: tuple[int, int] | None

    def run(self, argv: list[str]) -> bytes:
        o = _sandbox.spawn(
            argv,
            self.profile,
            self.limits,
            method=self.method,
            bwrap=self.bwrap,
            run_as=self.run_as,
        ).wait()
        if o.exit_code != 0 or o.method != self.method:
            err = o.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{self.method}: exit {o.exit_code} via {o.method}: {err}")
        return o.stdout

    def __call__(self) -> None:
        self.run(["/bin/true"])


def isolation(run: Callable[[list[str]], bytes]) -> str:
    """What the sandboxed process sees of itself: ids, seccomp mode, capabilities."""
    out = run(["/usr/bin/grep", "-E", "^(Uid|Seccomp|CapEff|NoNewPrivs):", "/proc/self/status"])
    fields = dict(line.split(":", 1) for line in out.decode().splitlines())
    return " ".join(
        f"{k}={fields.get(k, '?').split()[0]}" for k in ("Uid", "Seccomp", "CapEff", "NoNewPrivs")
    )


def p95(xs: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


@dataclass(frozen=True)
class Stats:
    name: str
    median_ms: float
    p95_ms: float
    min_ms: float
    mean_ms: float

    @classmethod
    def of(cls, name: str, ms: list[float]) -> Stats:
        return cls(name, statistics.median(ms), p95(ms), min(ms), statistics.fmean(ms))


def measure(
    variants: dict[str, Callable[[], None]], iterations: int, warmup: int
) -> dict[str, list[float]]:
    keys = list(variants)
    times: dict[str, list[float]] = {k: [] for k in keys}
    gc.collect()
    gc.disable()
    try:
        for i in range(warmup + iterations):
            shift = i % len(keys)
            for k in keys[shift:] + keys[:shift]:
                t0 = time.perf_counter()
                variants[k]()
                dt = time.perf_counter() - t0
                if i >= warmup:
                    times[k].append(dt * 1000.0)
    finally:
        gc.enable()
    return times


def bwrap_version(bwrap: str) -> str:
    out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=200, help="timed rounds (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed rounds first (default 20)")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        ap.error("--iterations must be >= 1 and --warmup >= 0")

    runner = SandboxRunner()
    if runner.bwrap is None:
        print("sandbox_spawn: no bwrap binary found; variant a and b need one", file=sys.stderr)
        return 2
    bwrap = runner.bwrap
    run_as = runner.settings.run_as if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="janus-bench-"))
    try:
        profile = runner.profile(workdir)
        limits = Limits(timeout_s=30)
        raw = RawBwrap(
            bwrap,
            _sandbox.bwrap_options(profile),
            lambda argv: _sandbox.bwrap_command(argv, profile, limits),
            run_as,
            _sandbox.seccomp_program(False),
        )
        ext_bwrap = Extension("bwrap", profile, limits, bwrap, run_as)
        ext_native = Extension("native", profile, limits, None, run_as)
        # The same isolation in all three, or the comparison means nothing.
        seen = {
            "a": isolation(lambda argv: raw.run(argv, capture=True)),
            "b": isolation(ext_bwrap.run),
            "c": isolation(ext_native.run),
        }
        variants: dict[str, Callable[[], None]] = {"a": raw, "b": ext_bwrap, "c": ext_native}
        times = measure(variants, args.iterations, args.warmup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    stats = {k: Stats.of(NAMES[k], v) for k, v in times.items()}
    ratios = {r: stats[r[0]].median_ms / stats[r[2]].median_ms for r in TARGETS}
    report: dict[str, Any] = {
        "benchmark": "sandbox_spawn",
        "command": "/bin/true",
        "iterations": args.iterations,
        "warmup": args.warmup,
        "order": "round-robin, rotating start",
        "host": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "bwrap": bwrap,
            "bwrap_version": bwrap_version(bwrap),
            "run_as": list(run_as) if run_as else None,
        },
        "raw_bwrap_fds": raw.note,
        "isolation_seen": seen,
        "variants": {k: asdict(v) for k, v in stats.items()},
        "ratios": {
            r: {"value": v, "target_max": TARGETS[r], "pass": v <= TARGETS[r]}
            for r, v in ratios.items()
        },
    }
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    ids = ":".join(map(str, run_as)) if run_as else "the caller's"
    print(
        f"sandbox_spawn: /bin/true, {args.iterations} rounds round-robin "
        f"after {args.warmup} warm-up rounds"
    )
    print(
        f"host: {os.cpu_count()} cpus, kernel {platform.release()}, "
        f"Python {platform.python_version()}, {bwrap_version(bwrap)} ({bwrap}), "
        f"sandbox uid:gid {ids}"
    )
    print(f"variant a: {raw.note}")
    for k, line in seen.items():
        print(f"inside {k}: {line}")
    print()
    print(f"{'variant':<22} {'median ms':>10} {'p95 ms':>10} {'min ms':>10} {'mean ms':>10}")
    for k, st in stats.items():
        print(
            f"{k + '  ' + st.name:<22} {st.median_ms:>10.3f} {st.p95_ms:>10.3f} "
            f"{st.min_ms:>10.3f} {st.mean_ms:>10.3f}"
        )
    print()
    for r, v in ratios.items():
        verdict = "PASS" if v <= TARGETS[r] else "MISS"
        print(f"{r} (medians) = {v:.3f}   target <= {TARGETS[r]:.2f}   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
