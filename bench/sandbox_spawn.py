"""Sandboxed `/bin/true`: the extension against raw bwrap, in one run.

Variants, timed round-robin (each iteration runs all of them, in a rotating
order, so drift in the machine's load hits them alike):

  a     raw bwrap     `subprocess.run([bwrap, *options, "--", *command])`: the
                      argv bwrap gets from the extension, with the options from
                      `_sandbox.bwrap_options(profile)` on its command line and
                      the command from `_sandbox.bwrap_command`; the seccomp
                      program on fd 4 (a memfd) and an info pipe on fd 5, as
                      one sandbox uid when root, empty environment
  a_hook              a, with an empty `preexec_fn`: what the hook a_cg needs
                      costs by itself (subprocess then forks instead of vfork)
  a_cg  raw + cgroup  a, in the same cgroup a sandbox gets, set up by hand: the
                      cgroup dirs made and limited (`cgroups.Layout.create`),
                      joined from the `preexec_fn` (v1: through `tasks`, as
                      the extension does), removed after, untimed (as b and c
                      remove theirs off the caller's path)
  b     ext. bwrap    `SandboxRunner.run(["/bin/true"], ...)` with method
                      bwrap: everything a sandbox holds as a whole (cgroup,
                      uid lock, scratch tmpfs with the work dir copied in and
                      back) plus rlimits, output capture, the timeout watch
  c     ext. native   the same through method native: no bwrap process

Then 8 sandboxes at once (8 threads, each `spawn` then `wait` of `sleep 0.2`
through the runner): the time until all 8 have started and until all 8 are
reaped, median of the rounds.

Each time is wall clock around the whole call, measured in this process; what
b and c hand to the reclaimer thread (unmount, cgroup removal, freeing the
uid) is finished, untimed, before the next call of any variant.
Targets (medians): b/a <= 1.15, b/a_cg <= 1.05, c/a <= 0.55.

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
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from janus_policy import _sandbox
from janus_policy.execution import allotment, cgroups
from janus_policy.execution.sandbox import Limits, SandboxRunner, SandboxSettings

SECCOMP_FD = 4
INFO_FD = 5
TARGETS = {"b/a": 1.15, "b/a_cg": 1.05, "c/a": 0.55}
NAMES = {
    "a": "raw bwrap",
    "a_hook": "raw bwrap, empty hook",
    "a_cg": "raw bwrap + cgroup",
    "b": "extension, bwrap",
    "c": "extension, native",
}


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
    #: "hook": an empty preexec_fn; "cgroup": a fresh cgroup per run, joined there.
    extra: str = ""
    layout: cgroups.Layout | None = None
    limits: Limits | None = None
    pending: list[cgroups.SandboxCgroup] = field(default_factory=list)

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
        run_as = self.run_as
        if run_as and not self.extra:
            ids = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
        group = None
        procs: list[str] = []
        if self.extra == "cgroup" and self.layout is not None and self.limits is not None:
            lim = self.limits
            group = self.layout.create(
                {"memory_mb": lim.memory_mb, "nproc": lim.nproc, "cpu_percent": lim.cpu_percent}
            )
            # As the extension joins: v1's `tasks` moves the one thread
            # without the kernel's global threadgroup lock.
            procs = [
                str(d / "tasks") if (d / "tasks").exists() else str(d / "cgroup.procs")
                for d in group.dirs
            ]

        def hook() -> None:
            # Joined while still root, who may write there; then the ids
            # subprocess would otherwise set before the hook.
            for path in procs:
                with open(path, "w") as f:
                    f.write("0")
            if run_as:
                os.setgroups([])
                os.setresgid(run_as[1], run_as[1], run_as[1])
                os.setresuid(run_as[0], run_as[0], run_as[0])

        if self.extra:
            ids["preexec_fn"] = hook
        try:
            return self._run(argv, capture, ids)
        finally:
            if group is not None:
                self.pending.append(group)

    def cleanup(self) -> None:
        """Removes the cgroups made by hand: off the timed path, as b and c
        hand theirs to the reclaimer thread."""
        while self.pending:
            self.pending.pop().remove()

    def _run(self, argv: list[str], capture: bool, ids: dict[str, Any]) -> bytes:
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
    """Variants b and c: a whole run through the runner."""

    runner: SandboxRunner
    workdir: Path
    limits: Limits

    def run(self, argv: list[str]) -> bytes:
        o = self.runner.run(argv, self.runner.profile(self.workdir), self.limits)
        if o.exit_code != 0 or o.method != self.runner.settings.method:
            err = o.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{self.runner.settings.method}: exit {o.exit_code}: {err}")
        return o.stdout

    def __call__(self) -> None:
        self.run(["/bin/true"])


def _round(runner: SandboxRunner, workdir: Path, n: int) -> tuple[float, float]:
    """One round of n at once: ms until all have started, until all are reaped."""
    barrier = threading.Barrier(n + 1)
    up: list[float] = []
    done: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        run = runner.spawn(["sleep", "0.2"], runner.profile(workdir), Limits(timeout_s=30))
        with lock:
            up.append(time.perf_counter())
        run.wait()
        with lock:
            done.append(time.perf_counter())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return (max(up) - t0) * 1000, (max(done) - t0) * 1000


def at_once(runner: SandboxRunner, workdir: Path, n: int, rounds: int) -> dict[str, float]:
    """n sandboxes started at once: medians of time to all started, to all reaped."""
    results = [_round(runner, workdir, n) for _ in range(rounds)]
    return {
        "sandboxes": n,
        "rounds": rounds,
        "all_started_ms": statistics.median(r[0] for r in results),
        "all_reaped_ms": statistics.median(r[1] for r in results),
    }


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
                # What an ended sandbox held is given back off the caller's
                # path; it is done here, untimed, before every call, so that
                # no variant runs beside that work (and a raw bwrap's
                # preexec_fn never forks beside another thread).
                allotment.drain()
                t0 = time.perf_counter()
                variants[k]()
                dt = time.perf_counter() - t0
                cleanup = getattr(variants[k], "cleanup", None)
                if cleanup is not None:
                    cleanup()
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

    runner = SandboxRunner(SandboxSettings(method="bwrap"))
    native = SandboxRunner(SandboxSettings(method="native"))
    if runner.bwrap is None:
        print("sandbox_spawn: no bwrap binary found; variants a and b need one", file=sys.stderr)
        return 2
    bwrap = runner.bwrap
    scope, why = runner.limits
    layout = cgroups.discover() if os.geteuid() == 0 else "not root"
    run_as = None
    if os.geteuid() == 0 and runner.settings.uid_range:
        run_as = (runner.settings.uid_range[0],) * 2
    workdir = Path(tempfile.mkdtemp(prefix="janus-bench-"))
    rawdir = Path(tempfile.mkdtemp(prefix="janus-bench-raw-"))
    try:
        # Raw bwrap binds its work dir as it is: it is handed to a's uid.
        profile = runner.profile(rawdir)
        if run_as:
            os.chown(rawdir, *run_as)
        limits = Limits(timeout_s=30)

        def raw_variant(extra: str) -> RawBwrap:
            return RawBwrap(
                bwrap,
                _sandbox.bwrap_options(profile),
                lambda argv: _sandbox.bwrap_command(argv, profile, limits),
                run_as,
                _sandbox.seccomp_program(False),
                extra=extra,
                layout=None if isinstance(layout, str) else layout,
                limits=limits,
            )

        raw = raw_variant("")
        variants: dict[str, Callable[[], None]] = {
            "a": raw,
            "a_hook": raw_variant("hook"),
            "a_cg": raw_variant("cgroup"),
            "b": Extension(runner, workdir, limits),
            "c": Extension(native, workdir, limits),
        }
        # The same isolation in all of them, or the comparison means nothing.
        seen = {
            "a": isolation(lambda argv: raw.run(argv, capture=True)),
            "b": isolation(Extension(runner, workdir, limits).run),
            "c": isolation(Extension(native, workdir, limits).run),
        }
        times = measure(variants, args.iterations, args.warmup)
        eight = at_once(runner, workdir, 8, max(3, args.iterations // 20))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(rawdir, ignore_errors=True)

    stats = {k: Stats.of(NAMES[k], v) for k, v in times.items()}
    ratios = {
        r: stats[r.split("/")[0]].median_ms / stats[r.split("/")[1]].median_ms for r in TARGETS
    }
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
            "limits": scope,
            "limits_reason": why,
            "cgroup": None if isinstance(layout, str) else layout.version,
        },
        "raw_bwrap_fds": raw.note,
        "isolation_seen": seen,
        "eight_at_once": eight,
        "variants": {k: asdict(v) for k, v in stats.items()},
        "ratios": {
            r: {"value": v, "target_max": TARGETS[r], "pass": v <= TARGETS[r]}
            for r, v in ratios.items()
        },
    }
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(report, stats, ratios)
    return 0


def _print(report: dict[str, Any], stats: dict[str, Stats], ratios: dict[str, float]) -> None:
    host = report["host"]
    eight = report["eight_at_once"]
    run_as = host["run_as"]
    ids = f"a: {run_as[0]}, b and c: one of their own each" if run_as else "the caller's"
    cg = f"cgroup {host['cgroup']}" if host["cgroup"] else "no cgroup"
    print(
        f"sandbox_spawn: /bin/true, {report['iterations']} rounds round-robin "
        f"after {report['warmup']} warm-up rounds"
    )
    print(
        f"host: {host['cpus']} cpus, kernel {host['kernel']}, Python {host['python']}, "
        f"{host['bwrap_version']} ({host['bwrap']}), sandbox uid {ids}; "
        f"limits {host['limits']} ({cg})"
    )
    print(f"variant a: {report['raw_bwrap_fds']}")
    for k, line in report["isolation_seen"].items():
        print(f"inside {k}: {line}")
    print()
    print(f"{'variant':<30} {'median ms':>10} {'p95 ms':>10} {'min ms':>10} {'mean ms':>10}")
    for k, st in stats.items():
        print(
            f"{k + '  ' + st.name:<30} {st.median_ms:>10.3f} {st.p95_ms:>10.3f} "
            f"{st.min_ms:>10.3f} {st.mean_ms:>10.3f}"
        )
    print(
        f"\n8 sandboxes at once (sleep 0.2, median of {eight['rounds']} rounds): "
        f"all started {eight['all_started_ms']:.1f} ms, all reaped {eight['all_reaped_ms']:.1f} ms"
    )
    print()
    for r, v in ratios.items():
        verdict = "PASS" if v <= TARGETS[r] else "MISS"
        print(f"{r} (medians) = {v:.3f}   target <= {TARGETS[r]:.2f}   {verdict}")


if __name__ == "__main__":
    sys.exit(main())
