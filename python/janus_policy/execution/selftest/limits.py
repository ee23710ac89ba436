"""Limit checks: a fork bomb, memory, a file's size, /tmp's size, CPU and the
timeout each stop where they must, reported as the limit that fired; and the
limits that hold for the whole tree (memory of many processes and of memfds,
disk across files, /tmp and /dev/shm, a CPU quota)."""

from __future__ import annotations

import errno
import os
import secrets
import signal
import subprocess
import threading

from janus_policy.execution.sandbox import Limits, Outcome
from janus_policy.execution.selftest.battery import (
    Battery,
    Verdict,
    _host_pids_with,
    _marker,
    _show,
    _survivors,
    probe,
)


def check_fork_bomb(b: Battery) -> Verdict:
    nproc = 32
    marker = f"janus-bomb-{secrets.token_hex(6)}"
    limits = Limits(nproc=nproc, timeout_s=3, grace_s=0.5, memory_mb=256)
    work = b.workdir("bomb")
    sb = b.runner.spawn(
        ["bash", "-c", "bomb() { while :; do bomb & done; }; bomb", marker],
        b.runner.profile(work),
        limits,
    )
    peak, host_forks = 0, []
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            # bash only: bwrap's own processes carry the marker in their argv too.
            n = len(_host_pids_with(marker, "bash"))
            peak = max(peak, n)
            if n:  # the host must still fork while the bomb runs
                host_forks.append(subprocess.run(["true"], check=False, timeout=10).returncode)
            done.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        o = sb.wait()
    finally:
        done.set()
        t.join(10)
    after = subprocess.run(["true"], check=False, timeout=10).returncode
    left = _survivors(marker)
    bit = os.strerror(errno.EAGAIN).encode() in o.stderr  # bash: "fork: retry: ..."
    forked = bool(host_forks) and not any(host_forks)
    ok = o.limit == "timeout" and bit and peak <= nproc and forked
    ok = ok and after == 0 and not left
    return ok, (
        f"nproc {nproc}: peak {peak} bash processes of the bomb; fork refused inside: {bit}; "
        f"host forks during the bomb: {len(host_forks)}, failed: {sum(map(bool, host_forks))}; "
        f"after: {after}; "
        f"ended by limit {o.limit!r}; survivors {left}"
    )


def check_memory(b: Battery) -> Verdict:
    o = b.run(
        ["perl", "-e", 'my $s = "x" x (128 * 1024 * 1024); print "allocated ", length($s), "\\n"'],
        limits=Limits(memory_mb=64, timeout_s=10),
    )
    # Named "memory" only where the kernel says so (an OOM kill in the
    # cgroup); per process, the allocation just fails.
    named = o.limit == "memory" or o.limits == "per-process"
    ok = o.exit_code != 0 and b"allocated" not in o.stdout and named
    return ok, f"memory_mb 64, tried 128 MiB ({o.limits}): {_show(o)}"


def check_disk_file(b: Battery) -> Verdict:
    work = b.workdir("disk")
    o = b.run(
        ["dd", "if=/dev/zero", f"of={work}/big", "bs=65536", "count=64"],
        limits=Limits(disk_mb=1, timeout_s=10),
        workdir=work,
    )
    big = work / "big"
    size = big.stat().st_size if big.exists() else 0
    ok = (o.signal == signal.SIGXFSZ or o.limit == "disk") and size <= 1 << 20
    return ok, f"disk_mb 1, tried 4 MiB: {_show(o)}; file on host {size} bytes"


def check_tmp_cap(b: Battery) -> Verdict:
    # Under root /tmp shares the sandbox's scratch filesystem (disk_mb);
    # elsewhere it is a tmpfs of tmp_size_mb: 1 MiB either way.
    o = b.run(
        ["perl", "-e", probe("tmp_fill.pl")], tmp_size_mb=1, limits=Limits(disk_mb=1, timeout_s=10)
    )
    enospc = os.strerror(errno.ENOSPC).encode() in o.stderr
    named = o.limit == "disk" or o.limits == "per-process"
    ok = o.exit_code != 0 and enospc and b"all written" not in o.stdout and named
    return ok, f"tmp_size_mb 1, tried 2000 x 4 KiB ({o.limits}): {_show(o)}"


def check_cpu(b: Battery) -> Verdict:
    if b.runner.limits[0] == "per-sandbox":
        # The quota holds the share: a spin gets 20% of one CPU until the
        # timeout ends it, and never more than its budget.
        limits = Limits(cpu_percent=20, timeout_s=3, grace_s=0.5)
        o = b.run(["perl", "-e", "1 while 1"], limits=limits)
        share = limits.timeout_s * limits.cpu_percent / 100
        ok = o.limit == "timeout" and o.cpu_s <= share * 1.25 + 0.1
        return (
            ok,
            f"quota {limits.cpu_percent}% for {limits.timeout_s}s: used {o.cpu_s:.2f}s; {_show(o)}",
        )
    # Per process: a 1 s budget inside a 10 s timeout fires first even on a busy host.
    limits = Limits(cpu_percent=10, timeout_s=10, grace_s=0.5)
    o = b.run(["perl", "-e", "1 while 1"], limits=limits)
    return o.limit == "cpu", (
        f"budget {limits.cpu_budget_s}s CPU ({limits.cpu_percent}% of {limits.timeout_s}s): "
        f"used {o.cpu_s:.2f}s; {_show(o)}"
    )


def check_timeout(b: Battery) -> Verdict:
    marker = _marker()
    o = b.run(["sleep", marker], limits=Limits(timeout_s=1, grace_s=0.5))
    left = _survivors(marker)
    return o.limit == "timeout" and not left, f"{_show(o)}; survivors {left}"


def check_timeout_ignoring_term(b: Battery) -> Verdict:
    marker = _marker()
    frac = marker.split(".")[1]
    script = 'trap "" TERM; sleep "1000.$1"; echo unreachable'
    o = b.run(["sh", "-c", script, "sh", frac], limits=Limits(timeout_s=1, grace_s=0.5))
    left = _survivors(marker)
    ok = o.limit == "timeout" and b"unreachable" not in o.stdout and not left
    return ok, f"{_show(o)}; survivors {left}"


def _per_process(o: Outcome) -> str | None:
    """Where limits hold per process only, a whole-tree check cannot hold;
    the host says so (and the daemon refuses auto-execution) instead."""
    if o.limits == "per-process":
        return "limits hold per process on this host: not held for the tree (reported as such)"
    return None


def check_memory_tree(b: Battery) -> Verdict:
    script = (
        "for i in 1 2 3 4 5 6 7 8; do "
        "perl -e '$s = q(x) x (40 << 20); sleep 3' & done; wait; exit 1"
    )
    o = b.run(["sh", "-c", script], limits=Limits(memory_mb=128, timeout_s=20))
    if why := _per_process(o):
        return True, why
    ok = o.limit == "memory" and o.memory_peak_kb <= (128 << 10) + 1024
    return ok, f"8 x 40 MiB under memory_mb 128: peak {o.memory_peak_kb} KiB; {_show(o)}"


def check_memfd(b: Battery) -> Verdict:
    script = (
        "import os\nfd = os.memfd_create('x')\n"
        "for _ in range(256): os.write(fd, b'x' * (1 << 20))\nprint('wrote 256 MiB')"
    )
    o = b.run(["python3", "-c", script], limits=Limits(memory_mb=64, timeout_s=20))
    if why := _per_process(o):
        return True, why
    ok = o.limit == "memory" and b"wrote" not in o.stdout
    return ok, f"256 MiB into a memfd under memory_mb 64: {_show(o)}"


def check_disk_whole(b: Battery) -> Verdict:
    work = b.workdir("disk-whole")
    script = (
        "for i in 1 2 3 4 5 6; do head -c 3000000 /dev/zero > f$i || exit 1; done; "
        "head -c 3000000 /dev/zero > /tmp/t || exit 1; head -c 3000000 /dev/zero > /dev/shm/s"
    )
    o = b.run(["sh", "-c", script], limits=Limits(disk_mb=10, timeout_s=20), workdir=work)
    kept = sum(p.stat().st_size for p in work.iterdir())
    if why := _per_process(o):
        return True, why
    ok = o.limit == "disk" and kept <= 10 << 20
    return ok, f"files, /tmp and /dev/shm under disk_mb 10: {kept} bytes kept; {_show(o)}"


def check_cpu_quota(b: Battery) -> Verdict:
    o = b.run(
        ["sh", "-c", "for i in 1 2 3 4; do (while :; do :; done) & done; sleep 2; kill 0"],
        limits=Limits(cpu_percent=25, timeout_s=20),
    )
    if why := _per_process(o):
        return True, why
    ok = o.cpu_limit == "cgroup_quota" and o.cpu_s < 1.0
    return ok, f"4 spinners for 2 s at cpu_percent 25: {o.cpu_s:.2f} s of CPU; {_show(o)}"
