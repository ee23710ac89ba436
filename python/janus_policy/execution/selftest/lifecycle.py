"""Lifecycle checks: nothing outlives the sandbox (double forks, a killed host
process), no host fd gets in, exit codes and signals come out as they were, and
with no way to isolate nothing runs at all."""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import janus_policy
from janus_policy.execution.sandbox import (
    Limits,
    SandboxRunner,
    SandboxSettings,
    SandboxUnavailable,
)
from janus_policy.execution.selftest.battery import (
    Battery,
    Verdict,
    _host_pids_with,
    _marker,
    _poll,
    _show,
    _survivors,
    probe,
)


def check_double_fork(b: Battery) -> Verdict:
    marker = _marker()
    frac = marker.split(".")[1]
    work = b.workdir("daemon")
    # The escapee is running (seen from the host) before the command ends on its own.
    sb = b.runner.spawn(
        ["sh", "-c", probe("double_fork.sh"), "sh", frac],
        b.runner.profile(work),
        Limits(timeout_s=10),
    )
    started = _poll(lambda: bool(_host_pids_with(marker)), 5.0)
    o = sb.wait()
    left = _survivors(marker)
    ok = started and o.limit == "none" and o.exit_code == 0 and not left
    return ok, f"escapee seen running: {started}; {_show(o)}; survivors {left}"


def _kill_host_process(b: Battery, settled: bool) -> Verdict:
    """Starts a host python that runs `sleep MARKER` in a sandbox, SIGKILLs it
    as soon as the sandbox exists (`settled`: once the sleep itself runs), and
    looks for what is left."""
    marker = _marker()
    cfg = {
        "method": b.method,
        "bwrap": b.runner.bwrap if b.method == "bwrap" else None,
        "uid_range": b.runner.settings.uid_range,
        "marker": marker,
        "workdir": str(b.workdir("orphan")),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", probe("host_child.py"), json.dumps(cfg)],
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


def check_inherited_fds(b: Battery) -> Verdict:
    """A host process with fds 3 and 4 open (the host's root, a secret file) starts a sandbox:
    the command sees only its own 0, 1 and 2."""
    secret = b.workdir("inherited") / "secret.txt"
    secret.write_text(secrets.token_hex(8))
    cfg = {
        "method": b.method,
        "bwrap": b.runner.bwrap if b.method == "bwrap" else None,
        "uid_range": b.runner.settings.uid_range,
        "secret": str(secret),
        "workdir": str(b.workdir("inherited-work")),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe("inherited_child.py"), json.dumps(cfg)],
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


def check_host_death(b: Battery) -> Verdict:
    # Right after spawn() returns bwrap is still building the sandbox: the
    # window its own --die-with-parent leaves open.
    early = _kill_host_process(b, settled=False)
    late = _kill_host_process(b, settled=True)
    return early[0] and late[0], f"{early[1]}; {late[1]}"


# ---- exit status ------------------------------------------------------------------


def check_exit_code(b: Battery) -> Verdict:
    o = b.run(["sh", "-c", "exit 7"])
    return o.exit_code == 7 and o.signal is None and o.limit == "none", _show(o)


def check_exit_signal(b: Battery) -> Verdict:
    got = []
    ok = True
    for sig in (signal.SIGSEGV, signal.SIGKILL):
        o = b.run(["sh", "-c", f"kill -{sig.name[3:]} $$"])
        ok = ok and o.exit_code == 128 + sig and o.signal == sig
        got.append(f"kill -{sig.name[3:]}: exit {o.exit_code}, signal {o.signal}")
    return ok, "; ".join(got)


# ---- fail closed ---------------------------------------------------------------


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


def check_fail_closed(b: Battery) -> Verdict:
    notes, ok = [], True
    default = SandboxSettings().allow_unsandboxed
    ok = ok and default is False
    notes.append(f"allow_unsandboxed defaults to {default}")
    fake = b.base / "tools" / "bwrap-broken"
    fake.parent.mkdir(mode=0o755, exist_ok=True)
    fake.write_text(probe("bwrap_broken.sh"))
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
    runner = SandboxRunner(replace(b.runner.settings, method=b.method, uid_range=None))
    work = b.workdir("nested")
    inner_fake = work / "bwrap-broken"
    shutil.copy(fake, inner_fake)
    paths = _python_paths()
    o = b.run(
        [sys.executable, "-c", probe("nested.py"), str(inner_fake), str(work)],
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


def check_verdict_from_kernel(b: Battery) -> Verdict:
    """A program cannot name its own limit: exit codes that read as signals,
    error text that reads like a limit, a signal sent to itself."""
    scripts = [
        "exit 152",
        "exit 153",
        "echo 'out of memory' >&2; exit 1",
        "echo 'No space left on device' >&2; exit 1",
        "kill -XCPU $$",
        "kill -XFSZ $$",
    ]
    named = {}
    for script in scripts:
        o = b.run(["sh", "-c", script])
        if o.limit != "none":
            named[script] = o.limit
    return not named, f"limits named by the program: {named or 'none'}"
