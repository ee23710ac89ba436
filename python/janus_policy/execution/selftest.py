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

This module only returns results; `janus-policy sandbox selftest` prints them.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

import janus_policy
from janus_policy.errors import InputError
from janus_policy.execution.sandbox import (
    DEFAULT_PATH,
    ENV_PASSTHROUGH,
    NOBODY,
    Limits,
    MethodName,
    Outcome,
    Profile,
    SandboxRunner,
    SandboxSettings,
    SandboxUnavailable,
)

__all__ = ["CHECKS", "Check", "CheckResult", "check_names", "run_selftest"]

Verdict = tuple[bool, str]

#: Syscall numbers for the perl `syscall()` probes; they differ per architecture.
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"ptrace": 101, "clone": 56, "mount": 165, "unshare": 272},
    "aarch64": {"ptrace": 117, "clone": 220, "mount": 40, "unshare": 97},
}
CLONE_NEWNS = 0x0002_0000
CLONE_NEWUSER = 0x1000_0000
PTRACE_TRACEME = 0
PTRACE_ATTACH = 16
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

#: Not blocked by anything but the limits under test.
DEFAULT_LIMITS = Limits(timeout_s=10, grace_s=0.5)

#: Only these two errors show that a path is read-only or absent, rather than
#: writable-but-forbidden (EACCES would mean the mount itself is writable).
READ_ONLY_OR_ABSENT = frozenset({errno.EROFS, errno.ENOENT})

#: Setuid programs tried, when the host has them setuid-root.
SETUID_CANDIDATES = ("su", "passwd", "mount", "umount", "chsh", "chfn", "gpasswd", "newgrp")

#: perl helper: `r(label, ok)` prints "label<TAB>OK" or "label<TAB>errno=N".
PERL_R = (
    'sub r { my ($l, $ok) = @_; my $e = $! + 0; print "$l\\t", ($ok ? "OK" : "errno=$e"), "\\n" } '
)


@dataclass(frozen=True)
class Check:
    """One containment property and the probe that tries to break it."""

    name: str
    must_hold: str
    probe: Callable[[Battery], Verdict] = field(repr=False, compare=False)


@dataclass(frozen=True)
class CheckResult:
    """How one check went, under which method; `detail` says what was seen."""

    name: str
    must_hold: str
    passed: bool
    detail: str
    method: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Battery:
    """What a probe gets: the runner, a scratch dir on the host, helpers."""

    def __init__(
        self, runner: SandboxRunner, method: MethodName, base: Path, protected: tuple[Path, ...]
    ) -> None:
        self.runner = runner
        self.method = method
        self.base = base
        self.protected = protected
        self._n = 0

    def workdir(self, name: str) -> Path:
        self._n += 1
        d = self.base / f"{name}-{self._n}"
        d.mkdir(mode=0o755)
        return d

    def run(
        self,
        argv: Sequence[str],
        *,
        limits: Limits = DEFAULT_LIMITS,
        workdir: Path | None = None,
        tmp_size_mb: int = 100,
        read_only_paths: Sequence[Path] = (),
        env: dict[str, str] | None = None,
        runner: SandboxRunner | None = None,
    ) -> Outcome:
        r = runner or self.runner
        work = workdir or self.workdir("run")
        profile = r.profile(work, tmp_size_mb=tmp_size_mb, read_only_paths=read_only_paths, env=env)
        return r.run(argv, profile, limits)


# ---- helpers --------------------------------------------------------------


def _show(o: Outcome, limit: int = 400) -> str:
    def cut(b: bytes) -> str:
        s = b.decode(errors="replace").strip()
        return s if len(s) <= limit else s[:limit] + "..."

    return (
        f"exit {o.exit_code}, signal {o.signal}, limit {o.limit}; "
        f"stdout {cut(o.stdout)!r}; stderr {cut(o.stderr)!r}"
    )


def _perl(script: str, *args: str) -> list[str]:
    return ["perl", "-e", PERL_R + script, *args]


def _results(o: Outcome) -> dict[str, str]:
    """Parses `label<TAB>result` lines printed by the perl helper."""
    out: dict[str, str] = {}
    for line in o.stdout.decode(errors="replace").splitlines():
        label, tab, result = line.partition("\t")
        if tab:
            out[label] = result
    return out


def _errno_of(result: str) -> int | None:
    return int(result[6:]) if result.startswith("errno=") else None


def _name(e: int | None) -> str:
    return errno.errorcode.get(e, str(e)) if e is not None else "success"


def _syscalls() -> dict[str, int] | None:
    return SYSCALLS.get(platform.machine())


def _marker() -> str:
    """A unique `sleep` argument: 1000 seconds and 12 random decimals."""
    return f"1000.{secrets.randbelow(10**12):012d}"


def _host_pids_with(arg: str, program: str | None = None) -> list[int]:
    """Host pids whose argv has `arg` as one whole argument (and whose argv[0]
    is `program`, by base name, if given)."""
    want = arg.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if want in argv and (program is None or argv[0].rsplit(b"/", 1)[-1] == program.encode()):
            found.append(int(entry.name))
    return found


def _poll(predicate: Callable[[], bool], within_s: float, step_s: float = 0.02) -> bool:
    """True as soon as `predicate` holds; False if it still fails after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


def _survivors(arg: str, within_s: float = 3.0) -> list[int]:
    """Processes with `arg` still alive after `within_s`; they are SIGKILLed
    (they are ours: the argument is unique) and reported."""
    if _poll(lambda: not _host_pids_with(arg), within_s):
        return []
    left = _host_pids_with(arg)
    for pid in left:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def _plant(path: Path, text: str) -> None:
    """A world-readable file in a world-searchable dir: only the mount
    namespace, not permissions, can keep the sandbox from reading it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.parent.chmod(0o755)
    path.write_text(text)
    path.chmod(0o644)


@contextmanager
def _listener(family: int, address: str | tuple[str, int]) -> Iterator[socket.socket]:
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind(address)
        s.listen(16)
        yield s
    finally:
        s.close()


def _pending(server: socket.socket) -> int:
    """Connections the kernel completed for `server` (accepted here, then closed)."""
    server.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def _self_connect(server: socket.socket) -> bool:
    """The host itself can reach `server`: the listener is real."""
    with socket.socket(server.family, socket.SOCK_STREAM) as c:
        c.settimeout(2)
        c.connect(server.getsockname())
    return _poll(lambda: _pending(server) == 1, 2.0)


# ---- network ----------------------------------------------------------------


def _check_egress_ip(b: Battery) -> Verdict:
    script = r"""
use Socket;
$SIG{ALRM} = sub { print "HUNG\n"; exit 3 }; alarm 5;
for (["1.1.1.1:53", AF_INET, sub { pack_sockaddr_in(53, inet_aton("1.1.1.1")) }],
     ["[2606:4700:4700::1111]:53", AF_INET6,
      sub { pack_sockaddr_in6(53, inet_pton(AF_INET6, "2606:4700:4700::1111")) }]) {
    my ($n, $fam, $addr) = @$_;
    if (!socket(my $s, $fam, SOCK_STREAM, 0)) { r("$n socket", 0); next }
    r("$n connect", connect($s, $addr->()));
}
"""
    o = b.run(_perl(script))
    res = _results(o)
    ok = (
        len(res) == 2
        and all(v.startswith("errno=") for v in res.values())
        and b"HUNG" not in o.stdout
    )
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


def _check_loopback(b: Battery) -> Verdict:
    script = r"""
use Socket;
$SIG{ALRM} = sub { print "HUNG\n"; exit 3 }; alarm 5;
if (!socket(my $s, AF_INET, SOCK_STREAM, 0)) { r("socket", 0) }
else { r("connect", connect($s, pack_sockaddr_in($ARGV[0], inet_aton("127.0.0.1")))) }
"""
    with _listener(socket.AF_INET, ("127.0.0.1", 0)) as server:
        if not _self_connect(server):
            return False, "the host could not reach its own test listener"
        port = server.getsockname()[1]
        o = b.run(_perl(script, str(port)))
        reached = _pending(server)
    res = _results(o)
    failed = len(res) == 1 and all(v.startswith("errno=") for v in res.values())
    return failed and reached == 0, (
        f"host listener 127.0.0.1:{port}; sandbox: "
        + ", ".join(f"{k} {_name(_errno_of(v))}" for k, v in res.items())
        + f"; connections that reached the host listener: {reached}"
    )


def _check_abstract_unix(b: Battery) -> Verdict:
    name = f"janus-selftest-{secrets.token_hex(8)}"
    script = r"""
use Socket;
socket(my $s, AF_UNIX, SOCK_STREAM, 0) or do { r("socket", 0); exit };
r("connect", connect($s, pack_sockaddr_un("\0" . $ARGV[0])));
"""
    with _listener(socket.AF_UNIX, "\0" + name) as server:
        if not _self_connect(server):
            return False, "the host could not reach its own abstract socket"
        o = b.run(_perl(script, name))
        reached = _pending(server)
    res = _results(o)
    failed = bool(res) and all(v.startswith("errno=") for v in res.values())
    return failed and reached == 0, (
        f"abstract socket @{name}; sandbox: "
        + ", ".join(f"{k} {_name(_errno_of(v))}" for k, v in res.items())
        + f"; connections that reached the host: {reached}"
    )


def _check_dns(b: Battery) -> Verdict:
    o = b.run(["getent", "hosts", "example.com"])
    return o.exit_code != 0 and not o.stdout.strip(), _show(o)


def _check_raw_socket(b: Battery) -> Verdict:
    script = r"""
use Socket;
r("AF_INET/SOCK_RAW/ICMP", socket(my $a, AF_INET, SOCK_RAW, 1));
r("AF_INET6/SOCK_RAW/ICMPV6", socket(my $b, AF_INET6, SOCK_RAW, 58));
r("AF_PACKET/SOCK_RAW", socket(my $c, 17, SOCK_RAW, 0x0300));
r("AF_PACKET/SOCK_DGRAM", socket(my $d, 17, SOCK_DGRAM, 0x0300));
r("AF_INET/SOCK_PACKET", socket(my $e, AF_INET, 10, 0x0300));
"""
    o = b.run(_perl(script))
    res = _results(o)
    ok = len(res) == 5 and all(v.startswith("errno=") for v in res.values())
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


#: Syscall numbers the filter probe calls by number (perl has no wrappers for them).
_SYSCALL_NUMBERS = {
    "x86_64": {"personality": 135, "modify_ldt": 154, "memfd_secret": 447},
    "aarch64": {"personality": 92, "memfd_secret": 447},
}


def _check_filter_gaps(b: Battery) -> Verdict:
    """What socket() refuses, socketpair() refuses too; netlink, setting a persona,
    modify_ldt and memfd_secret are refused; the harmless forms still work."""
    nr = _SYSCALL_NUMBERS.get(platform.machine(), {})
    script = r"""
use Socket;
r("socketpair AF_INET", socketpair(my $a, my $b, AF_INET, SOCK_STREAM, 0));
r("socket AF_NETLINK", socket(my $n, 16, SOCK_RAW, 0));
r("socket AF_NETLINK dgram", socket(my $m, 16, SOCK_DGRAM, 0));
"""
    allowed = r"""
r("socketpair AF_UNIX", socketpair(my $c, my $d, AF_UNIX, SOCK_STREAM, 0));
"""
    if "personality" in nr:
        script += (
            f'r("personality ADDR_NO_RANDOMIZE", syscall({nr["personality"]}, 0x0040000) != -1);\n'
        )
        allowed += f'r("personality query", syscall({nr["personality"]}, 0xffffffff) != -1);\n'
    if "modify_ldt" in nr:
        script += f'r("modify_ldt", syscall({nr["modify_ldt"]}, 0, 0, 0) != -1);\n'
    if "memfd_secret" in nr:
        script += f'r("memfd_secret", syscall({nr["memfd_secret"]}, 0) != -1);\n'
    o = b.run(_perl(script + allowed))
    res = _results(o)
    refused = {k: v for k, v in res.items() if k not in _FILTER_ALLOWED}
    ok = bool(refused) and all(v.startswith("errno=") for v in refused.values())
    ok = ok and all(res.get(k) == "OK" for k in _FILTER_ALLOWED if k in allowed)
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


_FILTER_ALLOWED = ("socketpair AF_UNIX", "personality query")


def _check_dev_tcp(b: Battery) -> Verdict:
    script = (
        'for t in "127.0.0.1/$1" 1.1.1.1/53; do '
        'if (exec 3<>"/dev/tcp/$t") 2>/dev/null; then echo "$t CONNECTED"; '
        'else echo "$t refused"; fi; done'
    )
    with _listener(socket.AF_INET, ("127.0.0.1", 0)) as server:
        if not _self_connect(server):
            return False, "the host could not reach its own test listener"
        o = b.run(["bash", "-c", script, "bash", str(server.getsockname()[1])])
        reached = _pending(server)
    out = o.stdout.decode(errors="replace")
    ok = o.limit == "none" and out.count("refused") == 2 and "CONNECTED" not in out
    return ok and reached == 0, f"{_show(o)}; connections that reached the host: {reached}"


def _check_only_lo(b: Battery) -> Verdict:
    o = b.run(["cat", "/proc/net/dev"])
    lines = o.stdout.decode(errors="replace").splitlines()[2:]
    names = {ln.split(":", 1)[0].strip() for ln in lines if ":" in ln}
    ok = o.exit_code == 0 and names == {"lo"}
    detail = f"/proc/net/dev: {sorted(names)}"
    ip = next(
        (p for p in ("/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None
    )
    if ip:
        # Netlink belongs to the network: without it, ip(8) cannot even ask.
        o2 = b.run([ip, "-o", "link", "show"])
        ok = ok and o2.exit_code != 0 and not o2.stdout
        detail += f"; {ip} link (netlink refused): {_show(o2)}"
    else:
        detail += "; no ip(8) on this host"
    return ok, detail


# ---- filesystem -------------------------------------------------------------

_WRITE_PROBE = r"""
for my $p (@ARGV) {
    if ($p =~ /^mkdir:(.*)/) { r($p, mkdir $1) }
    elsif ($p =~ /^append:(.*)/) { r($p, open(my $f, ">>", $1)) }
    elsif ($p =~ /^read:(.*)/) { my $ok = open(my $f, "<", $1); r($p, $ok); print <$f> if $ok }
    elsif ($p =~ /^exists:(.*)/) { r($p, -e $1) }
    else { my $ok = open(my $f, ">", $p); $ok = print $f "janus selftest\n" if $ok; r($p, $ok) }
}
"""


def _judge_writes(res: dict[str, str], expected: Sequence[str]) -> tuple[bool, list[str]]:
    bad, seen = [], []
    for p in expected:
        e = _errno_of(res.get(p, "missing"))
        seen.append(f"{p}: {_name(e)}")
        if res.get(p) is None or e not in READ_ONLY_OR_ABSENT:
            bad.append(p)
    return not bad, seen


def _check_readonly_root(b: Battery) -> Verdict:
    tok = secrets.token_hex(6)
    targets = [f"/usr/janus-{tok}", f"/etc/janus-{tok}", f"/janus-{tok}", f"/bin/janus-{tok}"]
    probes = [*targets, f"mkdir:/usr/lib/janus-{tok}", f"mkdir:/janus-{tok}.d"]
    # A read-only path that permissions alone would let the sandbox write:
    # only the read-only mount stands in the way, so EROFS is the one answer.
    ro = b.base / "read-only"
    ro.mkdir(mode=0o777)
    ro.chmod(0o777)
    existing = ro / "existing"
    existing.write_text("original\n")
    existing.chmod(0o666)
    ro_probes = [str(existing), f"append:{existing}", str(ro / f"new-{tok}"), f"read:{existing}"]
    o = b.run(_perl(_WRITE_PROBE, *probes, *ro_probes), read_only_paths=[ro])
    res = _results(o)
    ok, seen = _judge_writes(res, probes)
    ro_ok = all(_errno_of(res.get(p, "")) == errno.EROFS for p in ro_probes[:3])
    ro_ok = ro_ok and res.get(ro_probes[3]) == "OK" and existing.read_text() == "original\n"
    seen += [f"{p}: {_name(_errno_of(res.get(p, 'errno=-1')))}" for p in ro_probes]
    leaked = [
        p for p in [*targets, f"/usr/lib/janus-{tok}", f"/janus-{tok}.d"] if os.path.lexists(p)
    ]
    leaked += [str(p) for p in ro.iterdir() if p != existing]
    for p in leaked:  # a breach must not stay behind on the host
        with suppress(OSError):
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    detail = "; ".join(seen) + (f"; APPEARED ON HOST: {leaked}" if leaked else "")
    return ok and ro_ok and not leaked, detail


def _check_protected_dirs(b: Battery) -> Verdict:
    tok, secret = secrets.token_hex(8), secrets.token_hex(8)
    state, policies = b.base / "state", b.base / "policies"
    for d in (state, policies):
        _plant(d / "secret", f"protected {secret}\n")
    guarded = (*b.runner.settings.protected_paths, state, policies)
    runner = SandboxRunner(replace(b.runner.settings, method=b.method, protected_paths=guarded))
    notes: list[str] = []
    guard_ok = True
    work = b.workdir("protected")
    attempts: list[tuple[str, Callable[[], object]]] = [
        ("state dir as work dir", lambda: runner.profile(state)),
        (
            "policies dir as read-only path",
            lambda: runner.profile(work, read_only_paths=[policies]),
        ),
    ]
    for what, attempt in attempts:
        try:
            attempt()
        except InputError as e:
            notes.append(f"{what}: refused ({e.code})")
        else:
            guard_ok = False
            notes.append(f"{what}: ACCEPTED")
    probes = []
    for d in [state, policies, *b.protected, *b.runner.settings.protected_paths]:
        probes += [f"exists:{d}", f"{d}/janus-probe-{tok}", f"mkdir:{d}/janus-probe-{tok}.d"]
    probes += [f"read:{state}/secret", f"read:{policies}/secret"]
    o = b.run(_perl(_WRITE_PROBE, *probes), workdir=work, runner=runner)
    res = _results(o)
    writes = [p for p in probes if not p.startswith(("exists:", "read:"))]
    writes_ok, seen = _judge_writes(res, writes)
    visible = [p[7:] for p in probes if p.startswith("exists:") and res.get(p) != "errno=2"]
    read = [p[5:] for p in probes if p.startswith("read:") and res.get(p) == "OK"]
    leaked = secret.encode() in o.stdout
    for d in [state, policies, *b.protected, *b.runner.settings.protected_paths]:
        for p in (d / f"janus-probe-{tok}", d / f"janus-probe-{tok}.d"):
            if p.exists() or p.is_symlink():
                notes.append(f"WRITTEN ON HOST: {p}")
                with suppress(OSError):
                    p.rmdir() if p.is_dir() else p.unlink()
    ok = guard_ok and writes_ok and not visible and not read and not leaked
    ok = ok and not any(n.startswith("WRITTEN") for n in notes)
    detail = "; ".join(
        [*notes, *seen, f"visible inside: {visible}", f"read inside: {read}"]
        + (["SECRET LEAKED"] if leaked else [])
    )
    return ok, detail


def _check_protected_symlink(b: Battery) -> Verdict:
    tok, secret = secrets.token_hex(8), secrets.token_hex(8)
    state = b.base / "state-behind-link"
    _plant(state / "secret", f"protected {secret}\n")
    guarded = (*b.runner.settings.protected_paths, state)
    runner = SandboxRunner(replace(b.runner.settings, method=b.method, protected_paths=guarded))
    # Innocent-looking paths, e.g. left in an earlier work dir by the agent itself.
    as_work, as_ro = b.base / "linked-work", b.base / "linked-data"
    as_work.symlink_to(state)
    as_ro.symlink_to(state)
    other = b.workdir("linked")
    attempts: list[tuple[str, Path, Callable[[], Profile]]] = [
        ("work dir", as_work, lambda: runner.profile(as_work)),
        ("read-only path", as_ro, lambda: runner.profile(other, read_only_paths=[as_ro])),
    ]
    notes, ok = [], True
    for i, (what, link, attempt) in enumerate(attempts):
        try:
            profile = attempt()
        except InputError as e:
            notes.append(f"symlink into the state dir as {what}: refused ({e.code})")
            continue
        ok = False
        probe = f"{link}/janus-probe-{tok}-{i}"
        o = runner.run(_perl(_WRITE_PROBE, f"read:{link}/secret", probe), profile, DEFAULT_LIMITS)
        res = _results(o)
        written = (state / f"janus-probe-{tok}-{i}").exists()
        notes.append(
            f"symlink into the state dir as {what}: ACCEPTED; inside, reading the secret: "
            f"{'LEAKED' if secret.encode() in o.stdout else res.get(f'read:{link}/secret')}, "
            f"writing: {'WRITTEN ON HOST' if written else res.get(probe)}"
        )
    return ok, "; ".join(notes)


def _check_workdir(b: Battery) -> Verdict:
    work = b.workdir("work")
    tok = secrets.token_hex(8)
    o = b.run(
        ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", tok, str(work / "out.txt")], workdir=work
    )
    host = work / "out.txt"
    got = host.read_text() if host.is_file() else None
    return o.exit_code == 0 and got == tok, f"{_show(o)}; host sees {got!r}"


def _check_private_tmp(b: Battery) -> Verdict:
    tok = secrets.token_hex(8)
    inside, outside = f"/tmp/janus-selftest-in-{tok}", f"/tmp/janus-selftest-out-{tok}"
    host_tmp_ok = os.access("/tmp", os.W_OK)
    try:
        if host_tmp_ok:
            Path(outside).write_text("host\n")
            os.chmod(outside, 0o644)
        o = b.run(_perl(_WRITE_PROBE, inside, f"exists:{inside}", f"exists:{outside}"))
        res = _results(o)
        appeared = os.path.lexists(inside)
        ok = (
            res.get(inside) == "OK"
            and res.get(f"exists:{inside}") == "OK"
            and res.get(f"exists:{outside}") == "errno=2"
            and not appeared
        )
        detail = (
            f"write inside: {res.get(inside)}; host file visible inside: "
            f"{res.get(f'exists:{outside}') == 'OK'}; inside file appeared on host: {appeared}"
        )
        if not host_tmp_ok:
            detail += " (host /tmp not writable: planted no host file)"
        return ok, detail
    finally:
        for p in (inside, outside):
            with suppress(OSError):
                os.unlink(p)


def _check_symlinks(b: Battery) -> Verdict:
    tok = secrets.token_hex(8)
    secret = b.base / "outside" / "secret.txt"
    _plant(secret, f"secret {tok}\n")
    work = b.workdir("links")
    links = {
        "shadow": "/etc/shadow",
        "root-ssh": "/root/.ssh",
        "root-ssh-key": "/root/.ssh/id_rsa",
        "planted": str(secret),
        "planted-dir": str(secret.parent),
    }
    for name, target in links.items():
        (work / name).symlink_to(target)
    probes = [f"read:{work / n}" for n in links] + [f"exists:{work / 'planted-dir'}/secret.txt"]
    probes += [f"read:/proc/self/root{secret}", f"read:/proc/1/root{secret}", f"read:{secret}"]
    o = b.run(_perl(_WRITE_PROBE, *probes), workdir=work)
    res = _results(o)
    opened = [p for p in probes if res.get(p) == "OK"]
    leaked = tok.encode() in o.stdout or b"root:" in o.stdout
    ok = len(res) == len(probes) and not opened and not leaked
    return ok, (
        f"planted secret {secret} (mode 0644); opened inside: {opened}"
        + ("; SECRET LEAKED" if leaked else "")
        + ("" if len(res) == len(probes) else f"; {_show(o)}")
    )


# ---- processes and privileges -------------------------------------------------


def _check_proc(b: Battery) -> Verdict:
    script = r"""
opendir(my $d, "/proc") or die "opendir /proc: $!";
my @pids = sort { $a <=> $b } grep { /^\d+$/ } readdir $d;
print "pids\t@pids\n";
for my $p (@pids) {
    open(my $f, "<", "/proc/$p/cmdline") or next;
    local $/; my $c = <$f>; $c =~ s/\0/ /g; print "cmd $p\t$c\n";
}
r("kill0", kill(0, $ARGV[0]));
"""
    me = os.getpid()
    o = b.run(_perl(script, str(me)))
    res = _results(o)
    pids = [int(p) for p in res.get("pids", "").split()]
    with open("/proc/1/cmdline", "rb") as f:
        host_init = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    cmds = [v.strip() for k, v in res.items() if k.startswith("cmd ")]
    host_pids = sum(1 for e in os.scandir("/proc") if e.name.isdigit())
    ok = (
        0 < len(pids) <= 8
        and me not in pids
        and _errno_of(res.get("kill0", "")) == errno.ESRCH
        and (not host_init or host_init not in cmds)
    )
    return ok, (
        f"pids inside {pids} (host has {host_pids}); host python pid {me}; "
        f"kill(0, {me}) inside: {_name(_errno_of(res.get('kill0', 'errno=-1')))}; "
        f"inside cmdlines: {cmds}"
    )


def _check_caps(b: Battery) -> Verdict:
    o = b.run(["cat", "/proc/self/status"])
    fields = dict(
        ln.split(":", 1) for ln in o.stdout.decode(errors="replace").splitlines() if ":" in ln
    )
    got = {
        k: fields.get(k, "?").strip()
        for k in (
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp",
        )
    }
    ok = (
        all(got[k] == "0" * 16 for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))
        and got["NoNewPrivs"] == "1"
        and got["Seccomp"] == "2"
    )
    return ok, ", ".join(f"{k} {v}" for k, v in got.items())


_SETUID_PROBE = r"""
use Fcntl; use POSIX ();
for my $bin (@ARGV) {
    pipe(my $r, my $w) or die "pipe: $!";
    # Fill the pipe: the program blocks at its first write, after exec set its ids.
    my $fl = fcntl($w, F_GETFL, 0); fcntl($w, F_SETFL, $fl | O_NONBLOCK);
    1 while syswrite($w, "x" x 4096); 1 while syswrite($w, "x");
    fcntl($w, F_SETFL, $fl);
    my $pid = fork;
    if (!$pid) {
        open(STDOUT, ">&", $w); open(STDERR, ">&", $w);
        exec($bin, "--help"); POSIX::_exit(127);
    }
    close $w;
    (my $name = substr((split m{/}, $bin)[-1], 0, 15));
    my ($uid, $state) = ("?", "?");
    for (1 .. 300) {
        open(my $s, "<", "/proc/$pid/status") or last;
        local $/; my $t = <$s>;
        my ($n) = $t =~ /^Name:\t(.*)$/m; ($state) = $t =~ /^State:\t(\S)/m;
        ($uid) = $t =~ /^Uid:\t(.*)$/m;
        last if $n eq $name && $state ne "R";
        select(undef, undef, undef, 0.01);
    }
    print "$bin\t$uid\n";
    kill 9, $pid; waitpid $pid, 0;
}
"""


def _setuid_root_binaries() -> list[str]:
    found = []
    for name in SETUID_CANDIDATES:
        for d in ("/usr/bin", "/usr/sbin"):
            p = os.path.join(d, name)
            with suppress(OSError):
                st = os.stat(p)
                if st.st_mode & stat.S_ISUID and st.st_uid == 0:
                    found.append(p)
                    break
    return found


def _euids(text: str) -> dict[str, list[int]]:
    out = {}
    for line in text.splitlines():
        path, tab, ids = line.partition("\t")
        with suppress(ValueError):
            if tab:
                out[path] = [int(x) for x in ids.split()]
    return out


def _check_setuid(b: Battery) -> Verdict:
    notes, ok = [], True
    # Calibrate on the host, as a non-root uid: only programs whose elevation the
    # probe can see outside prove anything inside.
    binaries = _setuid_root_binaries()
    calibrated: list[str] = []
    if binaries:
        uid, gid = NOBODY if os.geteuid() == 0 else (None, None)
        host = subprocess.run(
            ["perl", "-e", _SETUID_PROBE, *binaries],
            capture_output=True,
            timeout=60,
            check=False,
            cwd="/",
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )
        calibrated = [p for p, ids in _euids(host.stdout.decode()).items() if ids[1:2] == [0]]
        notes.append(f"setuid-root on host: {binaries}; elevate outside: {calibrated}")
    if calibrated:
        o = b.run(["perl", "-e", _SETUID_PROBE, *calibrated])
        inside = _euids(o.stdout.decode(errors="replace"))
        for p in calibrated:
            ids = inside.get(p)
            if not ids or len(ids) < 4 or 0 in ids or len(set(ids)) != 1:
                ok = False
            notes.append(f"{p} inside: uids {ids}")
    # A setuid-root, setgid-root copy of id(1) in the work dir (needs host root).
    if os.geteuid() == 0:
        work = b.workdir("setuid")
        planted = work / "suid-id"
        shutil.copy(shutil.which("id") or "/usr/bin/id", planted)
        os.chown(planted, 0, 0)
        planted.chmod(0o6755)
        o = b.run([str(planted)], workdir=work)
        out = o.stdout.decode(errors="replace").strip()
        if o.exit_code != 0 or "euid=" in out or "egid=" in out or out.startswith("uid=0("):
            ok = False
        notes.append(f"setuid-root copy of id in the work dir prints {out!r}")
    o = b.run(["cat", "/proc/self/status"])
    nnp = re.search(rb"^NoNewPrivs:\s*(\d)", o.stdout, re.M)
    if not nnp or nnp.group(1) != b"1":
        ok = False
    notes.append(f"NoNewPrivs {nnp.group(1).decode() if nnp else '?'}")
    if not calibrated and os.geteuid() != 0:
        notes.append("no calibrated setuid program: relying on NoNewPrivs")
    return ok, "; ".join(notes)


def _check_no_namespaces(b: Battery) -> Verdict:
    sh = (
        'unshare -U true 2>/dev/null; echo "unshare -U\t$?"; '
        'unshare -Ur true 2>/dev/null; echo "unshare -Ur\t$?"; '
        'unshare -m true 2>/dev/null; echo "unshare -m\t$?"; '
        'mount -t tmpfs x /tmp 2>/dev/null; echo "mount -t tmpfs x /tmp\t$?"'
    )
    o1 = b.run(["sh", "-c", sh])
    status = _results(o1)
    ok = len(status) == 4 and all(v.strip() not in ("", "0") for v in status.values())
    detail = ", ".join(f"{k}: exit {v}" for k, v in status.items())
    nr = _syscalls()
    if nr is None:
        return False, f"{detail}; no syscall table for {platform.machine()}"
    script = rf"""
use POSIX ();
r("unshare(CLONE_NEWUSER)", syscall({nr["unshare"]}, {CLONE_NEWUSER}) == 0);
r("unshare(CLONE_NEWNS)", syscall({nr["unshare"]}, {CLONE_NEWNS}) == 0);
my $pid = syscall({nr["clone"]}, {CLONE_NEWUSER} | 17, 0, 0, 0, 0);
POSIX::_exit(0) if $pid == 0;
r("clone(CLONE_NEWUSER)", $pid > 0); waitpid($pid, 0) if $pid > 0;
my ($src, $dst, $fs) = ("x", "/tmp", "tmpfs");  # syscall() wants writable strings
r("mount(tmpfs)", syscall({nr["mount"]}, $src, $dst, $fs, 0, 0) == 0);
"""
    o2 = b.run(_perl(script))
    res = _results(o2)
    ok = ok and len(res) == 4 and all(v.startswith("errno=") for v in res.values())
    detail += "; " + ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items())
    return ok, detail if res else f"{detail}; {_show(o2)}"


def _check_ptrace(b: Battery) -> Verdict:
    nr = _syscalls()
    if nr is None:
        return False, f"no syscall table for {platform.machine()}"
    script = rf"""
r("PTRACE_TRACEME", syscall({nr["ptrace"]}, {PTRACE_TRACEME}, 0, 0, 0) == 0);
r("PTRACE_ATTACH to parent", syscall({nr["ptrace"]}, {PTRACE_ATTACH}, getppid(), 0, 0) == 0);
"""
    o = b.run(_perl(script))
    res = _results(o)
    ok = len(res) == 2 and all(_errno_of(v) == errno.EPERM for v in res.values())
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


_PROC_ENV_PROBE = r"""
# Other processes of the sandbox (its init is a copy of the host process under
# the native method) must not hand over the host's environment either.
my $secret = reverse $ARGV[0];  # reversed, so this probe's own argv does not hold it
for my $f (glob("/proc/[0-9]*/environ"), glob("/proc/[0-9]*/cmdline")) {
    next unless open(my $h, "<", $f);
    local $/; my $t = <$h>;
    print "$f\tLEAK\n" if index($t, $secret) >= 0;
    print "$f\treadable\n";
}
"""


def _check_env(b: Battery) -> Verdict:
    tok = secrets.token_hex(8)
    saved = os.environ.get("JANUS_SELFTEST_SECRET")
    os.environ["JANUS_SELFTEST_SECRET"] = tok
    try:
        work = b.workdir("env")
        o = b.run(["env"], workdir=work)
        o2 = b.run(["perl", "-e", _PROC_ENV_PROBE, tok[::-1]], workdir=work)
    finally:
        if saved is None:
            os.environ.pop("JANUS_SELFTEST_SECRET", None)
        else:
            os.environ["JANUS_SELFTEST_SECRET"] = saved
    allowed = {*ENV_PASSTHROUGH, "PATH", "HOME", "TMPDIR"}
    seen = dict(
        ln.split("=", 1) for ln in o.stdout.decode(errors="replace").splitlines() if "=" in ln
    )
    # bwrap itself sets PWD to its --chdir, the work dir: not host data.
    extra = {k for k in seen if k not in allowed and not (k == "PWD" and seen[k] == str(work))}
    lines = o2.stdout.decode(errors="replace").splitlines()
    leaks = [ln.split("\t")[0] for ln in lines if ln.endswith("\tLEAK")]
    readable = [ln.split("\t")[0] for ln in lines if ln.endswith("\treadable")]
    ok = o.exit_code == 0 and o2.exit_code == 0 and not extra and tok.encode() not in o.stdout
    ok = ok and seen.get("PATH") == DEFAULT_PATH and not leaks
    return ok, (
        f"variables inside: {sorted(seen)}; not allowed: {sorted(extra)}; "
        f"/proc files readable inside: {len(readable)}, holding the host secret: {leaks}"
        + ("; SECRET LEAKED through env" if tok.encode() in o.stdout else "")
    )


def _check_tiocsti(b: Battery) -> Verdict:
    script = rf"""
my @fds = (["stdin", \*STDIN], ["stdout", \*STDOUT]);
if (open(my $m, "+<", "/dev/ptmx")) {{ push @fds, ["ptmx", $m] }}
for my $req ({TIOCSTI}, {TIOCSTI | 1 << 32}, {TIOCLINUX}) {{
    for (@fds) {{
        my $c = "x";
        r(sprintf("%s ioctl 0x%x", $_->[0], $req), ioctl($_->[1], $req, $c));
    }}
}}
r("open /dev/tty", open(my $t, "+<", "/dev/tty"));
"""
    o = b.run(_perl(script))
    res = _results(o)
    ioctls = {k: v for k, v in res.items() if "ioctl" in k}
    ok = (
        len(ioctls) >= 6
        and all(_errno_of(v) == errno.EPERM for v in ioctls.values())
        and _errno_of(res.get("open /dev/tty", "OK")) is not None
    )
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


# ---- limits -------------------------------------------------------------------


def _check_fork_bomb(b: Battery) -> Verdict:
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


def _check_memory(b: Battery) -> Verdict:
    o = b.run(
        ["perl", "-e", 'my $s = "x" x (128 * 1024 * 1024); print "allocated ", length($s), "\\n"'],
        limits=Limits(memory_mb=64, timeout_s=10),
    )
    ok = o.exit_code != 0 and b"allocated" not in o.stdout and o.limit == "memory"
    return ok, f"memory_mb 64, tried 128 MiB: {_show(o)}"


def _check_disk_file(b: Battery) -> Verdict:
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


def _check_tmp_cap(b: Battery) -> Verdict:
    script = r"""
for my $i (1 .. 2000) {
    open(my $f, ">", "/tmp/f$i") or die "open $i: $!\n";
    print $f "x" x 4096 or die "write $i: $!\n";
    close $f or die "close $i: $!\n";
}
print "all written\n";
"""
    o = b.run(["perl", "-e", script], tmp_size_mb=1, limits=Limits(disk_mb=16, timeout_s=10))
    enospc = os.strerror(errno.ENOSPC).encode() in o.stderr
    ok = o.exit_code != 0 and enospc and b"all written" not in o.stdout and o.limit == "disk"
    return ok, f"tmp_size_mb 1, tried 2000 x 4 KiB: {_show(o)}"


def _check_cpu(b: Battery) -> Verdict:
    # A 1 s budget inside a 10 s timeout: the budget fires first even on a busy host.
    limits = Limits(cpu_percent=10, timeout_s=10, grace_s=0.5)
    o = b.run(["perl", "-e", "1 while 1"], limits=limits)
    cpu = o.user_s + o.sys_s
    return o.limit == "cpu", (
        f"budget {limits.cpu_budget_s}s CPU ({limits.cpu_percent}% of {limits.timeout_s}s): "
        f"used {cpu:.2f}s; {_show(o)}"
    )


def _check_timeout(b: Battery) -> Verdict:
    marker = _marker()
    o = b.run(["sleep", marker], limits=Limits(timeout_s=1, grace_s=0.5))
    left = _survivors(marker)
    return o.limit == "timeout" and not left, f"{_show(o)}; survivors {left}"


def _check_timeout_ignoring_term(b: Battery) -> Verdict:
    marker = _marker()
    frac = marker.split(".")[1]
    script = 'trap "" TERM; sleep "1000.$1"; echo unreachable'
    o = b.run(["sh", "-c", script, "sh", frac], limits=Limits(timeout_s=1, grace_s=0.5))
    left = _survivors(marker)
    ok = o.limit == "timeout" and b"unreachable" not in o.stdout and not left
    return ok, f"{_show(o)}; survivors {left}"


def _check_double_fork(b: Battery) -> Verdict:
    marker = _marker()
    frac = marker.split(".")[1]
    work = b.workdir("daemon")
    # The escapee is running (seen from the host) before the command ends on its own.
    script = (
        'setsid nohup sleep "1000.$1" >/dev/null 2>&1 & '
        "while [ ! -e release ]; do sleep 0.02; done; exit 0"
    )
    sb = b.runner.spawn(
        ["sh", "-c", script, "sh", frac], b.runner.profile(work), Limits(timeout_s=10)
    )
    started = _poll(lambda: bool(_host_pids_with(marker)), 5.0)
    (work / "release").touch()
    o = sb.wait()
    left = _survivors(marker)
    ok = started and o.limit == "none" and o.exit_code == 0 and not left
    return ok, f"escapee seen running: {started}; {_show(o)}; survivors {left}"


_HOST_CHILD = """
import json, sys
from janus_policy.execution.sandbox import Limits, SandboxRunner, SandboxSettings
c = json.loads(sys.argv[1])
run_as = tuple(c["run_as"]) if c["run_as"] else None
r = SandboxRunner(SandboxSettings(method=c["method"], bwrap_path=c["bwrap"], run_as=run_as))
sb = r.spawn(["sleep", c["marker"]], r.profile(c["workdir"]), Limits(timeout_s=60))
print(sb.pid, flush=True)
sb.wait()
"""


def _kill_host_process(b: Battery, settled: bool) -> Verdict:
    """Starts a host python that runs `sleep MARKER` in a sandbox, SIGKILLs it
    as soon as the sandbox exists (`settled`: once the sleep itself runs), and
    looks for what is left."""
    marker = _marker()
    cfg = {
        "method": b.method,
        "bwrap": b.runner.bwrap if b.method == "bwrap" else None,
        "run_as": b.runner.settings.run_as,
        "marker": marker,
        "workdir": str(b.workdir("orphan")),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOST_CHILD, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    program = "sleep" if settled else None
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            line = proc.stdout.readline() if sel.select(timeout=15) else b""
        running = line.strip().isdigit() and _poll(
            lambda: bool(_host_pids_with(marker, program)), 5.0
        )
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    when = "once the command ran" if settled else "while the sandbox was being set up"
    if not running:
        return False, f"{when}: no sandbox started: {err.decode(errors='replace')!r}"
    left = _survivors(marker)
    return not left, f"{when}: host process SIGKILLed, survivors {left}"


_INHERITED_CHILD = """
import json, os, sys
from janus_policy.execution.sandbox import Limits, SandboxRunner, SandboxSettings
c = json.loads(sys.argv[1])
# As a shell that ran `exec 3</ 4<SECRET` would hand them on: fds 3 and 4, inheritable.
os.dup2(os.open("/", os.O_RDONLY | os.O_DIRECTORY), 3)
os.dup2(os.open(c["secret"], os.O_RDONLY), 4)
for fd in (3, 4):
    os.set_inheritable(fd, True)
run_as = tuple(c["run_as"]) if c["run_as"] else None
r = SandboxRunner(SandboxSettings(method=c["method"], bwrap_path=c["bwrap"], run_as=run_as))
probe = "ls -l /proc/$$/fd/"  # the shell's own fds, listed by a child
o = r.spawn(["sh", "-c", probe], r.profile(c["workdir"]), Limits(timeout_s=20)).wait()
print(json.dumps({"exit": o.exit_code, "fds": o.stdout.decode(errors="replace")}))
"""


def _check_inherited_fds(b: Battery) -> Verdict:
    """A host process with fds 3 and 4 open (the host's root, a secret file) starts a sandbox:
    the command sees only its own 0, 1 and 2."""
    secret = b.workdir("inherited") / "secret.txt"
    secret.write_text(secrets.token_hex(8))
    cfg = {
        "method": b.method,
        "bwrap": b.runner.bwrap if b.method == "bwrap" else None,
        "run_as": b.runner.settings.run_as,
        "secret": str(secret),
        "workdir": str(b.workdir("inherited-work")),
    }
    done = subprocess.run(
        [sys.executable, "-c", _INHERITED_CHILD, json.dumps(cfg)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    try:
        report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, f"the probe did not run: {done.stderr.decode(errors='replace')[-300:]!r}"
    links = (ln.split(" -> ", 1) for ln in report["fds"].splitlines() if " -> " in ln)
    fds = {name.split()[-1]: target for name, target in links}
    extra = {fd: target for fd, target in fds.items() if fd not in ("0", "1", "2")}
    ok = report["exit"] == 0 and not extra
    return ok, f"fds inside beyond 0-2: {extra or 'none'}"


def _check_host_death(b: Battery) -> Verdict:
    # Right after spawn() returns bwrap is still building the sandbox: the
    # window its own --die-with-parent leaves open.
    early = _kill_host_process(b, settled=False)
    late = _kill_host_process(b, settled=True)
    return early[0] and late[0], f"{early[1]}; {late[1]}"


# ---- exit status ------------------------------------------------------------------


def _check_exit_code(b: Battery) -> Verdict:
    o = b.run(["sh", "-c", "exit 7"])
    return o.exit_code == 7 and o.signal is None and o.limit == "none", _show(o)


def _check_exit_signal(b: Battery) -> Verdict:
    got = []
    ok = True
    for sig in (signal.SIGSEGV, signal.SIGKILL):
        o = b.run(["sh", "-c", f"kill -{sig.name[3:]} $$"])
        ok = ok and o.exit_code == 128 + sig and o.signal == sig
        got.append(f"kill -{sig.name[3:]}: exit {o.exit_code}, signal {o.signal}")
    return ok, "; ".join(got)


# ---- fail closed ---------------------------------------------------------------

_NESTED = """
import json, subprocess, sys
from pathlib import Path
from janus_policy.execution.sandbox import (
    Limits, SandboxRunner, SandboxSettings, SandboxUnavailable,
)
from janus_policy.execution.selftest import run_selftest
fake, work = sys.argv[1], Path(sys.argv[2])
out = {"unshare -U": subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode}
out["allow_unsandboxed default"] = SandboxSettings().allow_unsandboxed
cases = {
    "auto": SandboxSettings(run_as=None),
    "bwrap": SandboxSettings(method="bwrap", run_as=None),
    "native": SandboxSettings(method="native", run_as=None),
    "auto, broken bwrap": SandboxSettings(bwrap_path=fake, run_as=None),
}
for label, settings in cases.items():
    runner = SandboxRunner(settings)
    mark = work / ("ran-" + label.replace(" ", "_").replace(",", ""))
    try:
        runner.run(["sh", "-c", 'echo ran > "$1"', "sh", str(mark)], runner.profile(work), Limits())
        out[label] = "RAN with " + runner.method
    except SandboxUnavailable as e:
        out[label] = "refused: " + str(e)
try:
    anything = SandboxRunner(SandboxSettings(run_as=None, allow_unsandboxed=True))
    run_selftest(anything, only=["exit-code"])
    out["battery, unsandboxed allowed"] = "RAN"
except SandboxUnavailable as e:
    out["battery, unsandboxed allowed"] = "refused: " + str(e)
print(json.dumps(out))
"""


def _python_paths() -> list[Path]:
    """What the interpreter and this package need to be importable elsewhere."""
    pkg_root = Path(janus_policy.__file__).resolve().parents[1]
    paths = {
        Path(sys.prefix),
        Path(sys.base_prefix),
        pkg_root,
        Path(sys.executable).resolve().parent,
    }
    paths = {p for p in paths if p.is_dir() and not p.is_relative_to("/usr")}
    return sorted(p for p in paths if not any(q in p.parents for q in paths))


def _python_env() -> dict[str, str]:
    env = {
        "PYTHONPATH": str(Path(janus_policy.__file__).resolve().parents[1]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # An interpreter whose libpython is found only this way needs it inside too.
    if "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def _check_fail_closed(b: Battery) -> Verdict:
    notes, ok = [], True
    default = SandboxSettings().allow_unsandboxed
    ok = ok and default is False
    notes.append(f"allow_unsandboxed defaults to {default}")
    fake = b.base / "tools" / "bwrap-broken"
    fake.parent.mkdir(mode=0o755, exist_ok=True)
    fake.write_text("#!/bin/sh\necho 'bwrap: broken on purpose' >&2\nexit 1\n")
    fake.chmod(0o755)
    try:
        m = SandboxRunner(SandboxSettings(method="bwrap", bwrap_path=str(fake))).method
        ok = False
        notes.append(f"a bwrap that always fails was accepted: method {m!r}")
    except SandboxUnavailable as e:
        notes.append(f"broken bwrap: refused ({e})")
    # Inside the sandbox no namespace can be created: the runner must refuse there.
    # It runs as the calling uid so the interpreter's prefix (possibly under a
    # private home) can be bound; inside, that uid holds no capabilities.
    runner = SandboxRunner(replace(b.runner.settings, method=b.method, run_as=None))
    work = b.workdir("nested")
    inner_fake = work / "bwrap-broken"
    shutil.copy(fake, inner_fake)
    paths = _python_paths()
    o = b.run(
        [sys.executable, "-c", _NESTED, str(inner_fake), str(work)],
        runner=runner,
        workdir=work,
        read_only_paths=paths,
        env=_python_env(),
        limits=Limits(timeout_s=60, grace_s=0.5),
    )
    try:
        inner = json.loads(o.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, "; ".join([*notes, f"the nested runner did not report: {_show(o, 1500)}"])
    ran = sorted(p.name for p in work.glob("ran-*"))
    refused = [k for k, v in inner.items() if isinstance(v, str) and v.startswith("refused")]
    # Refused for the right reason: no namespace could be made.
    why = str(inner.get("native", "")) + str(inner.get("bwrap", ""))
    ok = ok and inner.get("unshare -U") != 0 and len(refused) == 5 and not ran
    ok = ok and "unshare" in why and "namespace" in why.lower()
    notes.append(
        f"no-namespace environment ({b.method} sandbox, binds {[str(p) for p in paths]}): {inner}"
    )
    if ran:
        notes.append(f"COMMANDS RAN: {ran}")
    return ok, "; ".join(notes)


CHECKS: list[Check] = [
    Check(
        "net-egress-ip",
        "TCP to an IP address (1.1.1.1:53, [2606:4700:4700::1111]:53) fails",
        _check_egress_ip,
    ),
    Check(
        "net-loopback",
        "a TCP server listening on the host's 127.0.0.1 cannot be reached",
        _check_loopback,
    ),
    Check(
        "net-abstract-unix",
        "an abstract unix socket listening on the host cannot be reached",
        _check_abstract_unix,
    ),
    Check("net-dns", "a DNS lookup (getent hosts example.com) fails", _check_dns),
    Check("net-raw-socket", "raw and packet sockets cannot be opened", _check_raw_socket),
    Check(
        "filter-gaps",
        "socketpair is filtered like socket; netlink, setting a persona, modify_ldt and "
        "memfd_secret are refused",
        _check_filter_gaps,
    ),
    Check(
        "net-dev-tcp",
        "bash /dev/tcp connections fail, to loopback and to the internet",
        _check_dev_tcp,
    ),
    Check(
        "net-only-lo",
        "the network namespace has only lo (/proc/net/dev), and netlink is refused (ip link)",
        _check_only_lo,
    ),
    Check(
        "fs-readonly-root",
        "writes to /usr, /etc, / fail with EROFS or ENOENT",
        _check_readonly_root,
    ),
    Check(
        "fs-protected-dirs",
        "the protected state and policies dirs are invisible: writes fail with EROFS or ENOENT, "
        "nothing in them is readable, the runner refuses to bind them",
        _check_protected_dirs,
    ),
    Check(
        "fs-protected-symlink",
        "a work dir or read-only path that is a symlink into a protected dir is refused",
        _check_protected_symlink,
    ),
    Check("fs-workdir", "writes to the work dir succeed and appear on the host", _check_workdir),
    Check(
        "fs-private-tmp",
        "/tmp is private both ways: nothing written there reaches the host's /tmp",
        _check_private_tmp,
    ),
    Check(
        "fs-symlink-escape",
        "symlinks in the work dir to host files outside the binds (/etc/shadow, /root/.ssh, "
        "a planted world-readable secret) read nothing",
        _check_symlinks,
    ),
    Check(
        "proc-isolated",
        "/proc shows only the sandbox's few processes; host pids cannot be signalled",
        _check_proc,
    ),
    Check(
        "caps-dropped",
        "CapInh/Prm/Eff/Bnd/Amb are 0, NoNewPrivs is 1, a seccomp filter is on",
        _check_caps,
    ),
    Check(
        "setuid-inert", "a setuid-root binary grants nothing: euid stays non-root", _check_setuid
    ),
    Check(
        "no-namespaces-no-mounts",
        "unshare -U, unshare -m and mount -t tmpfs fail, also as raw unshare/clone/mount syscalls",
        _check_no_namespaces,
    ),
    Check(
        "ptrace-denied", "ptrace (PTRACE_TRACEME, PTRACE_ATTACH) fails with EPERM", _check_ptrace
    ),
    Check(
        "env-allowlist",
        "the environment holds only allow-listed variables; host secrets stay out",
        _check_env,
    ),
    Check(
        "no-inherited-fds",
        "open fds of the host process (its root, a secret file) do not reach the command",
        _check_inherited_fds,
    ),
    Check(
        "tiocsti-denied",
        "TIOCSTI (also with high bits set) and TIOCLINUX fail with EPERM; no controlling tty",
        _check_tiocsti,
    ),
    Check(
        "limit-fork-bomb",
        "a fork bomb stops at nproc, ends by the timeout, and the host can still fork",
        _check_fork_bomb,
    ),
    Check(
        "limit-memory",
        "allocating twice the memory limit fails and is reported as limit 'memory'",
        _check_memory,
    ),
    Check(
        "limit-disk-file",
        "a file past the disk limit is stopped by SIGXFSZ (limit 'disk')",
        _check_disk_file,
    ),
    Check(
        "limit-tmp-size",
        "many small files in /tmp stop at its size cap with ENOSPC",
        _check_tmp_cap,
    ),
    Check(
        "limit-cpu",
        "a CPU spin stops at its budget (cpu_percent x timeout_s): limit 'cpu'",
        _check_cpu,
    ),
    Check(
        "limit-timeout",
        "a sleep past the timeout is killed and reported as limit 'timeout'",
        _check_timeout,
    ),
    Check(
        "limit-timeout-sigterm-ignored",
        "a command ignoring SIGTERM is still killed at the timeout (limit 'timeout')",
        _check_timeout_ignoring_term,
    ),
    Check(
        "no-survivor-double-fork",
        "a setsid/nohup double-forked sleep does not outlive the sandbox",
        _check_double_fork,
    ),
    Check(
        "dies-with-host-process", "SIGKILLing the host process kills its sandbox", _check_host_death
    ),
    Check("exit-code", "exit 7 gives exit_code 7", _check_exit_code),
    Check(
        "exit-signal",
        "death by signal n (SEGV, KILL) gives exit_code 128+n and signal n",
        _check_exit_signal,
    ),
    Check(
        "fail-closed",
        "with no working bwrap and no namespaces, nothing runs: the runner and the battery refuse "
        "rather than run unsandboxed",
        _check_fail_closed,
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
