"""Process and privilege checks: /proc shows only the sandbox, no capabilities,
setuid is inert, no namespaces or mounts, no ptrace, only allow-listed environment,
no terminal injection, and the syscall filter has no gaps."""

from __future__ import annotations

import errno
import os
import platform
import pwd
import re
import secrets
import shutil
import stat
import subprocess
from contextlib import suppress

from janus_policy.execution.sandbox import DEFAULT_PATH, ENV_PASSTHROUGH, Limits
from janus_policy.execution.selftest.battery import (
    Battery,
    Verdict,
    _errno_of,
    _name,
    _perl,
    _results,
    _show,
    probe,
)

#: Syscall numbers for the perl `syscall()` probes; they differ per architecture.
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"ptrace": 101, "clone": 56, "mount": 165, "unshare": 272},
    "aarch64": {"ptrace": 117, "clone": 220, "mount": 40, "unshare": 97},
}

#: Setuid programs tried, when the host has them setuid-root.
SETUID_CANDIDATES = ("su", "passwd", "mount", "umount", "chsh", "chfn", "gpasswd", "newgrp")


def _syscalls() -> dict[str, int] | None:
    return SYSCALLS.get(platform.machine())


def check_proc(b: Battery) -> Verdict:
    me = os.getpid()
    o = b.run(_perl("proc.pl", str(me)))
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


def check_caps(b: Battery) -> Verdict:
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


def check_setuid(b: Battery) -> Verdict:
    notes, ok = [], True
    # Calibrate on the host, as a non-root uid: only programs whose elevation the
    # probe can see outside prove anything inside.
    binaries = _setuid_root_binaries()
    calibrated: list[str] = []
    if binaries:
        uid, gid = (65534, 65534) if os.geteuid() == 0 else (None, None)  # nobody
        host = subprocess.run(
            ["perl", "-e", probe("setuid.pl"), *binaries],
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
        o = b.run(["perl", "-e", probe("setuid.pl"), *calibrated])
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


def check_no_namespaces(b: Battery) -> Verdict:
    o1 = b.run(["sh", "-c", probe("no_namespaces.sh")])
    status = _results(o1)
    ok = len(status) == 4 and all(v.strip() not in ("", "0") for v in status.values())
    detail = ", ".join(f"{k}: exit {v}" for k, v in status.items())
    nr = _syscalls()
    if nr is None:
        return False, f"{detail}; no syscall table for {platform.machine()}"
    o2 = b.run(_perl("no_namespaces.pl", *(str(nr[k]) for k in ("unshare", "clone", "mount"))))
    res = _results(o2)
    ok = ok and len(res) == 4 and all(v.startswith("errno=") for v in res.values())
    detail += "; " + ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items())
    return ok, detail if res else f"{detail}; {_show(o2)}"


def check_ptrace(b: Battery) -> Verdict:
    nr = _syscalls()
    if nr is None:
        return False, f"no syscall table for {platform.machine()}"
    o = b.run(_perl("ptrace.pl", str(nr["ptrace"])))
    res = _results(o)
    ok = len(res) == 2 and all(_errno_of(v) == errno.EPERM for v in res.values())
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


def check_env(b: Battery) -> Verdict:
    tok = secrets.token_hex(8)
    saved = os.environ.get("JANUS_SELFTEST_SECRET")
    os.environ["JANUS_SELFTEST_SECRET"] = tok
    try:
        work = b.workdir("env")
        o = b.run(["env"], workdir=work)
        o2 = b.run(["perl", "-e", probe("proc_env.pl"), tok[::-1]], workdir=work)
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


def check_tiocsti(b: Battery) -> Verdict:
    o = b.run(_perl("tiocsti.pl"))
    res = _results(o)
    ioctls = {k: v for k, v in res.items() if "ioctl" in k}
    ok = (
        len(ioctls) >= 6
        and all(_errno_of(v) == errno.EPERM for v in ioctls.values())
        and _errno_of(res.get("open /dev/tty", "OK")) is not None
    )
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


#: Syscall numbers the filter probe calls by number (perl has no wrappers for them).
_SYSCALL_NUMBERS = {
    "x86_64": {"personality": 135, "modify_ldt": 154, "memfd_secret": 447},
    "aarch64": {"personality": 92, "memfd_secret": 447},
}

#: What the filter must still allow, each with the syscall the probe needs by
#: number to try it (None: perl has a wrapper); it is tried where that number is known.
_FILTER_ALLOWED: dict[str, str | None] = {
    "socketpair AF_UNIX": None,
    "personality query": "personality",
}


def check_filter_gaps(b: Battery) -> Verdict:
    """What socket() refuses, socketpair() refuses too; netlink, setting a persona,
    modify_ldt and memfd_secret are refused; the harmless forms still work."""
    nr = _SYSCALL_NUMBERS.get(platform.machine(), {})
    o = b.run(_perl("filter_gaps.pl", *(f"{name}={n}" for name, n in nr.items())))
    res = _results(o)
    refused = {k: v for k, v in res.items() if k not in _FILTER_ALLOWED}
    ok = bool(refused) and all(v.startswith("errno=") for v in refused.values())
    ok = ok and all(
        res.get(k) == "OK" for k, need in _FILTER_ALLOWED.items() if need is None or need in nr
    )
    return ok, ", ".join(f"{k}: {_name(_errno_of(v))}" for k, v in res.items()) or _show(o)


def check_pid1_confined(b: Battery) -> Verdict:
    o = b.run(["cat", "/proc/1/status"])
    fields = dict(
        ln.split(":", 1) for ln in o.stdout.decode(errors="replace").splitlines() if ":" in ln
    )
    got = {k: fields.get(k, "?").strip() for k in ("CapPrm", "CapEff", "CapBnd", "Seccomp")}
    ok = all(got[k] == "0000000000000000" for k in ("CapPrm", "CapEff")) and got["Seccomp"] == "2"
    return ok, f"pid 1 of the sandbox: {got}"


def check_uid_per_sandbox(b: Battery) -> Verdict:
    """Sandboxes alive at once run as different host uids, none an account,
    and what they leave in a kept work dir is no setuid file of theirs."""
    if os.geteuid() != 0 or b.runner.settings.uid_range is None:
        return True, "not root: sandboxes run as the caller's own uid (limits per process)"
    work = b.workdir("uids")
    runs = [
        b.runner.spawn(["sh", "-c", "id -u; sleep 1"], b.runner.profile(work), Limits(timeout_s=20))
        for _ in range(3)
    ]
    uids = [int(r.wait().stdout.split()[0]) for r in runs]
    accounts = [u for u in uids if _account(u)]
    o = b.run(["sh", "-c", "cp /usr/bin/id ./id && chmod 6755 ./id"], workdir=work)
    st = (work / "id").stat() if (work / "id").exists() else None
    setid = st is not None and bool(st.st_mode & (stat.S_ISUID | stat.S_ISGID))
    owner = (st.st_uid, st.st_gid) if st else None
    ok = (
        len(set(uids)) == 3 and not accounts and not setid and owner == (os.geteuid(), os.getegid())
    )
    return ok, (
        f"uids of 3 live sandboxes: {uids}; accounts among them: {accounts}; "
        f"kept file: setuid/setgid {setid}, owner {owner}; {_show(o)}"
    )


def _account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False
