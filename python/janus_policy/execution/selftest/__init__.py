"""The containment battery: tries the known ways out of the sandbox and says what held.

Each `Check` sets up what it needs on the host (a work dir, a listening socket, a
planted secret, a protected state dir), runs commands in the sandbox through the
given `SandboxRunner`, and judges the Outcome and the host's state afterwards.
Probes use only what every Debian system has inside the sandbox: sh/bash,
coreutils, perl-base (for syscall-level probes), util-linux and getent.

The battery never runs unsandboxed: `run_selftest` raises SandboxUnavailable when
the runner has no isolating method, even if the runner allows unsandboxed runs.
The `fail-closed` check shows that the runner refuses too: it runs the runner
inside the sandbox, where seccomp (and bwrap's --disable-userns) make every
namespace creation fail, so neither bwrap nor the native fallback can work
there — a real host without namespaces, not a mock — and it checks that nothing
runs. A bwrap that always exits 1 stands in for a broken bwrap binary.

The checks live in modules by area (network, filesystem, privilege, limits,
lifecycle); `battery` holds what they share, probes/ the scripts they run. This
package only returns results; `janus-policy sandbox selftest` prints them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from janus_policy.errors import InputError
from janus_policy.execution.sandbox import MethodName, SandboxRunner, SandboxUnavailable
from janus_policy.execution.selftest import filesystem, lifecycle, limits, network, privilege
from janus_policy.execution.selftest.battery import Battery, Check, CheckResult

__all__ = ["CHECKS", "Check", "CheckResult", "check_names", "run_selftest"]

CHECKS: list[Check] = [
    Check(
        "net-egress-ip",
        "TCP to an IP address (1.1.1.1:53, [2606:4700:4700::1111]:53) fails",
        network.check_egress_ip,
    ),
    Check(
        "net-loopback",
        "a TCP server listening on the host's 127.0.0.1 cannot be reached",
        network.check_loopback,
    ),
    Check(
        "net-abstract-unix",
        "an abstract unix socket listening on the host cannot be reached",
        network.check_abstract_unix,
    ),
    Check("net-dns", "a DNS lookup (getent hosts example.com) fails", network.check_dns),
    Check("net-raw-socket", "raw and packet sockets cannot be opened", network.check_raw_socket),
    Check(
        "filter-gaps",
        "socketpair is filtered like socket; netlink, setting a persona, modify_ldt and "
        "memfd_secret are refused",
        privilege.check_filter_gaps,
    ),
    Check(
        "net-dev-tcp",
        "bash /dev/tcp connections fail, to loopback and to the internet",
        network.check_dev_tcp,
    ),
    Check(
        "net-only-lo",
        "the network namespace has only lo (/proc/net/dev), and netlink is refused (ip link)",
        network.check_only_lo,
    ),
    Check(
        "fs-readonly-root",
        "writes to /usr, /etc, / fail with EROFS or ENOENT",
        filesystem.check_readonly_root,
    ),
    Check(
        "fs-protected-dirs",
        "the protected state and policies dirs are invisible: writes fail with EROFS or ENOENT, "
        "nothing in them is readable, the runner refuses to bind them",
        filesystem.check_protected_dirs,
    ),
    Check(
        "fs-protected-symlink",
        "a work dir or read-only path that is a symlink into a protected dir is refused",
        filesystem.check_protected_symlink,
    ),
    Check(
        "fs-workdir",
        "writes to the work dir succeed and appear on the host",
        filesystem.check_workdir,
    ),
    Check(
        "fs-private-tmp",
        "/tmp is private both ways: nothing written there reaches the host's /tmp",
        filesystem.check_private_tmp,
    ),
    Check(
        "fs-symlink-escape",
        "symlinks in the work dir to host files outside the binds (/etc/shadow, /root/.ssh, "
        "a planted world-readable secret) read nothing",
        filesystem.check_symlinks,
    ),
    Check(
        "proc-isolated",
        "/proc shows only the sandbox's few processes; host pids cannot be signalled",
        privilege.check_proc,
    ),
    Check(
        "caps-dropped",
        "CapInh/Prm/Eff/Bnd/Amb are 0, NoNewPrivs is 1, a seccomp filter is on",
        privilege.check_caps,
    ),
    Check(
        "setuid-inert",
        "a setuid-root binary grants nothing: euid stays non-root",
        privilege.check_setuid,
    ),
    Check(
        "no-namespaces-no-mounts",
        "unshare -U, unshare -m and mount -t tmpfs fail, also as raw unshare/clone/mount syscalls",
        privilege.check_no_namespaces,
    ),
    Check(
        "ptrace-denied",
        "ptrace (PTRACE_TRACEME, PTRACE_ATTACH) fails with EPERM",
        privilege.check_ptrace,
    ),
    Check(
        "env-allowlist",
        "the environment holds only allow-listed variables; host secrets stay out",
        privilege.check_env,
    ),
    Check(
        "no-inherited-fds",
        "open fds of the host process (its root, a secret file) do not reach the command",
        lifecycle.check_inherited_fds,
    ),
    Check(
        "tiocsti-denied",
        "TIOCSTI (also with high bits set) and TIOCLINUX fail with EPERM; no controlling tty",
        privilege.check_tiocsti,
    ),
    Check(
        "limit-fork-bomb",
        "a fork bomb stops at nproc, ends by the timeout, and the host can still fork",
        limits.check_fork_bomb,
    ),
    Check(
        "limit-memory",
        "allocating twice the memory limit fails and is reported as limit 'memory'",
        limits.check_memory,
    ),
    Check(
        "limit-memory-tree",
        "8 processes of 40 MiB under memory_mb 128 end at the limit together: limit 'memory', "
        "peak within it",
        limits.check_memory_tree,
    ),
    Check(
        "limit-memfd",
        "256 MiB written into a memfd under memory_mb 64 ends at the limit: limit 'memory'",
        limits.check_memfd,
    ),
    Check(
        "limit-disk-file",
        "a file past the disk limit is stopped by SIGXFSZ (limit 'disk')",
        limits.check_disk_file,
    ),
    Check(
        "limit-tmp-size",
        "many small files in /tmp stop at its size cap with ENOSPC",
        limits.check_tmp_cap,
    ),
    Check(
        "limit-disk-whole",
        "files in the work dir, /tmp and /dev/shm add up to at most disk_mb: limit 'disk'",
        limits.check_disk_whole,
    ),
    Check(
        "dev-no-data",
        "/dev holds only its nodes (read-only); /dev/shm is the scratch space",
        filesystem.check_dev_no_data,
    ),
    Check(
        "limit-cpu",
        "a CPU spin gets no more than its budget (cpu_percent x timeout_s): held by the quota "
        "until the timeout, else stopped at the budget (limit 'cpu')",
        limits.check_cpu,
    ),
    Check(
        "limit-cpu-quota",
        "cpu_percent is a quota for the whole tree: 4 spinners at 25% get at most ~0.5 s in 2 s",
        limits.check_cpu_quota,
    ),
    Check(
        "limit-timeout",
        "a sleep past the timeout is killed and reported as limit 'timeout'",
        limits.check_timeout,
    ),
    Check(
        "limit-timeout-sigterm-ignored",
        "a command ignoring SIGTERM is still killed at the timeout (limit 'timeout')",
        limits.check_timeout_ignoring_term,
    ),
    Check(
        "no-survivor-double-fork",
        "a setsid/nohup double-forked sleep does not outlive the sandbox",
        lifecycle.check_double_fork,
    ),
    Check(
        "uid-per-sandbox",
        "live sandboxes run as distinct host uids that are no account; a kept file carries no "
        "setuid bit and belongs to the caller",
        privilege.check_uid_per_sandbox,
    ),
    Check(
        "workdir-not-adopted",
        "an existing work dir keeps its owner and mode; system paths and paths through links are "
        "refused; a 0700 parent is no obstacle",
        filesystem.check_workdir_not_adopted,
    ),
    Check(
        "pid1-confined",
        "the sandbox's pid 1 holds no capability and runs under the seccomp filter",
        privilege.check_pid1_confined,
    ),
    Check(
        "verdict-from-kernel",
        "exit 152, 'out of memory' on stderr or a self-sent SIGXCPU names no limit",
        lifecycle.check_verdict_from_kernel,
    ),
    Check(
        "dies-with-host-process",
        "SIGKILLing the host process kills its sandbox",
        lifecycle.check_host_death,
    ),
    Check("exit-code", "exit 7 gives exit_code 7", lifecycle.check_exit_code),
    Check(
        "exit-signal",
        "death by signal n (SEGV, KILL) gives exit_code 128+n and signal n",
        lifecycle.check_exit_signal,
    ),
    Check(
        "fail-closed",
        "with no working bwrap and no namespaces, nothing runs: the runner and the battery refuse "
        "rather than run unsandboxed",
        lifecycle.check_fail_closed,
    ),
]


def check_names() -> list[str]:
    return [c.name for c in CHECKS]


def run_selftest(
    runner: SandboxRunner,
    *,
    only: Sequence[str] | None = None,
    protected_paths: Sequence[Path | str] = (),
) -> list[CheckResult]:
    """Runs the battery (or the checks named in `only`) against `runner`.

    `protected_paths` are real paths that must be invisible too (the daemon's
    state dir, its policies): the protected-dirs check probes them as well as
    the runner's own `protected_paths` and two temporary stand-ins. Raises
    SandboxUnavailable if the runner has no isolating method: the battery never
    runs commands unsandboxed.
    """
    method = cast(MethodName, runner.method)
    if method == "unsandboxed":
        raise SandboxUnavailable("the containment battery refuses to run unsandboxed")
    by_name = {c.name: c for c in CHECKS}
    unknown = [n for n in only or () if n not in by_name]
    if unknown:
        raise InputError(
            "E210", f"unknown check {', '.join(unknown)}; known: {', '.join(by_name)}", None, "only"
        )
    selected = [c for c in CHECKS if only is None or c.name in only]
    results = []
    with tempfile.TemporaryDirectory(prefix="janus-selftest-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the sandbox uid must reach its work dirs below
        battery = Battery(runner, method, base, tuple(Path(p).absolute() for p in protected_paths))
        for check in selected:
            try:
                passed, detail = check.probe(battery)
            except Exception as e:  # a probe that breaks is a failed check, not a crash
                passed, detail = False, f"probe error: {type(e).__name__}: {e}"
            results.append(CheckResult(check.name, check.must_hold, passed, detail, method))
    return results
