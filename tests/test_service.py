"""The service: the systemd unit, the daemon's sd_notify messages and
`janus-policy status`, with real processes.

The test plays systemd's part of the notify protocol: it binds the datagram
socket NOTIFY_SOCKET names and records every message with the pid that sent it
(SO_PASSCRED), as systemd does for NotifyAccess=main. State and work dirs live
under /tmp.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_env import DENIED, ESCALATES, Env, wait_for
from janus_policy.config import load_config
from janus_policy.runtime import control
from janus_policy.runtime.daemon import STOP_GRACE_S

UNIT = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / "janus-policy.service"
UNIT_EXEC = "/opt/janus-policy/bin/janus-policy"
ENTRY_POINT = Path(sys.executable).parent / "janus-policy"

Message = dict[str, str]


def unit_settings() -> dict[str, str]:
    """The unit's `Key=value` lines (no key is repeated in it)."""
    settings = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


# ---- the unit ----


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_the_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: use this installation's.
    text = UNIT.read_text()
    assert UNIT_EXEC in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(UNIT_EXEC, str(ENTRY_POINT)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and bad values are only warnings: any line naming the unit
    # fails, but for DelegateSubgroup= on a systemd older than 254, which ignores it.
    version = re.search(
        r"systemd (\d+)",
        subprocess.run(
            ["systemd-analyze", "--version"], capture_output=True, text=True, check=False
        ).stdout,
    )
    old = version is not None and int(version.group(1)) < 254
    complaints = [
        line
        for line in out.stderr.splitlines()
        if UNIT.name in line and not (old and "DelegateSubgroup" in line)
    ]
    assert out.returncode == 0, out.stderr
    assert complaints == []


def test_the_unit_waits_longer_than_the_daemon_grace() -> None:
    settings = unit_settings()
    assert float(settings["TimeoutStopSec"]) > STOP_GRACE_S
    # SIGTERM must reach the daemon alone, or every sandbox gets it at once.
    assert settings["KillMode"] == "mixed"


#: Shell approximations of the unit's file-system hardening: mounts in a private
#: mount namespace, run from a scratch dir that holds `tmp`, `empty` and
#: `nothing` (relative paths still reach it once /tmp is covered).
HARDENING = {
    "PrivateTmp": "{private_tmp}",
    # RuntimeDirectory= keeps /run/janus-policy writable under ProtectSystem.
    "ProtectSystem": (
        "mkdir -p /run/janus-policy && mount --bind /run/janus-policy /run/janus-policy;"
        " for m in $(findmnt -rno TARGET | grep -vE '^/(proc|sys|dev|tmp|run/janus-policy)(/|$)');"
        " do mount -o remount,bind,ro $m 2>/dev/null || true; done;"
        " findmnt -rno OPTIONS -T /usr | grep -q '^ro,'"
    ),
    "ProtectHome": "for h in {homes}; do mount -t tmpfs -o ro,mode=000 tmpfs $h; done",
    "ProtectKernelModules": (
        "for d in /lib/modules /usr/lib/modules; do [ ! -d $d ] || mount --bind empty $d; done"
    ),
    "ProtectControlGroups": (
        "mount --rbind /sys/fs/cgroup /sys/fs/cgroup &&"
        " for m in $(findmnt -rno TARGET | grep '^/sys/fs/cgroup'); do"
        " mount -o remount,bind,ro $m; done"
    ),
    "ProtectKernelTunables": (
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys"
    ),
    "ProtectKernelLogs": "mount --bind nothing /proc/kmsg",
}
PROBE = (
    "from janus_policy.execution.sandbox import SandboxRunner, SandboxSettings\n"
    "r = SandboxRunner(SandboxSettings(method='native'))\n"
    "print(r.method, r.limits[0])\n"
)


def _homes() -> str:
    """What ProtectHome hides, but for a home holding this Python or this
    checkout (a real installation must keep them elsewhere; see the unit)."""
    keep = [Path(sys.base_prefix).resolve(), Path(__file__).resolve()]
    homes = [Path(h) for h in ("/home", "/root", "/run/user") if Path(h).is_dir()]
    return " ".join(str(h) for h in homes if not any(h in k.parents for k in keep))


def _private_tmp() -> str:
    """A fresh /tmp; but a Python environment under /tmp (a CI checkout's
    virtualenv) is put back at its path, as _homes keeps one under a home: a
    real installation lives outside /tmp (see the unit). The cwd (the scratch
    dir) stays reachable after /tmp is covered, so `keep` carries it across."""
    prefix = Path(sys.prefix).resolve()
    if Path("/tmp") not in prefix.parents:
        return "mount --bind tmp /tmp"
    return (
        f"mkdir keep && mount --bind {prefix} keep && mount --bind tmp /tmp"
        f" && mkdir -p {prefix} && mount --bind keep {prefix}"
    )


def _probe_under(options: list[str]) -> subprocess.CompletedProcess[str]:
    """Probes the native sandbox in a mount namespace hardened like `options`,
    with no_new_privs as NoNewPrivileges=yes sets it."""
    with tempfile.TemporaryDirectory(prefix="janus-hardening-") as scratch:
        Path(scratch, "tmp").mkdir(mode=0o1777)
        os.chmod(Path(scratch, "tmp"), 0o1777)
        Path(scratch, "empty").mkdir(mode=0)
        Path(scratch, "nothing").touch(mode=0)
        mounts = "\n".join(
            HARDENING[o].format(homes=_homes(), private_tmp=_private_tmp()) for o in options
        )
        script = f'set -e\n{mounts}\nexec setpriv --no-new-privs "{sys.executable}" -c "$PROBE"\n'
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            cwd=scratch,
            env={**os.environ, "PROBE": PROBE},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")),
    reason="needs root, unshare(1) and setpriv(1) to build the unit's mount namespace",
)
def test_the_units_hardening_leaves_the_sandbox_working() -> None:
    settings = unit_settings()
    assert settings["NoNewPrivileges"] == "yes"
    present = [o for o in HARDENING if settings.get(o, "no") not in ("no", "false")]
    baseline = _probe_under([])
    if baseline.returncode != 0:
        pytest.skip(f"the native sandbox does not work on this host: {baseline.stderr[-300:]}")
    whole = baseline.stdout.split()[-1]
    out = _probe_under(present)
    assert (out.returncode, out.stdout.strip()) == (0, f"native {whole}"), out.stderr
    # Left out because it turns limits per process (cgroups read-only).
    assert "ProtectControlGroups" not in present
    if whole == "per-sandbox":
        out = _probe_under([*present, "ProtectControlGroups"])
        assert out.stdout.strip() == "native per-process", out.stderr
    # Those the unit leaves out for this reason really do break it.
    for left_out in ("ProtectKernelTunables", "ProtectKernelLogs"):
        assert left_out not in present
        out = _probe_under([*present, left_out])
        assert out.returncode != 0
        assert "mount proc" in out.stderr


# ---- sd_notify ----


class NotifyListener:
    """systemd's end of $NOTIFY_SOCKET: every datagram, parsed, with its sender's pid."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, Message]] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        ucred = struct.Struct("iII")
        while not self._closed:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred.size))
            except TimeoutError:
                continue
            pid = next(
                ucred.unpack(d[: ucred.size])[0]
                for level, kind, d in ancillary
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
            )
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._changed:
                self.messages.append((pid, fields))
                self._changed.notify_all()

    def wait_for(self, wanted: Callable[[Message], bool], after: int = 0) -> int:
        """The index of the first message from `after` on that is `wanted`."""
        deadline = time.monotonic() + 60
        with self._changed:
            while True:
                for i in range(after, len(self.messages)):
                    if wanted(self.messages[i][1]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such message in {self.messages[after:]}")
                self._changed.wait(left)

    def close(self) -> None:
        self._closed = True
        self._thread.join()
        self.sock.close()


def has(key: str, value: str = "1") -> Callable[[Message], bool]:
    return lambda m: m.get(key) == value


@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_the_daemon_speaks_sd_notify(env: Env, namespace: str) -> None:
    address = str(env.root / "notify.sock") if namespace == "path" else f"@janus-{uuid.uuid4().hex}"
    listener = NotifyListener(address)
    try:
        daemon = subprocess.Popen(
            env.daemon_argv(),
            env={**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"},
            stdout=subprocess.DEVNULL,
            stderr=(env.root / "daemon.log").open("ab"),
        )
        env.daemons.append(daemon)

        ready = listener.wait_for(has("READY"))
        message = listener.messages[ready][1]
        assert message["MAINPID"] == str(daemon.pid)
        assert message["STATUS"].startswith("mode ")
        first = listener.wait_for(has("WATCHDOG"), after=ready + 1)
        listener.wait_for(has("WATCHDOG"), after=first + 1)

        # Status updates (not a READY) follow the queue.
        env.submit(ESCALATES)
        listener.wait_for(lambda m: "READY" not in m and "(1 escalated)" in m.get("STATUS", ""))

        daemon.send_signal(signal.SIGHUP)
        reloading = listener.wait_for(has("RELOADING"))
        listener.wait_for(has("READY"), after=reloading + 1)

        daemon.send_signal(signal.SIGTERM)
        listener.wait_for(has("STOPPING"))
        assert daemon.wait(timeout=60) == 0
    finally:
        listener.close()
    # NotifyAccess=main: systemd would drop anything the daemon did not send itself.
    assert {pid for pid, _ in listener.messages} == {daemon.pid}


# ---- janus-policy status ----


def status(env: Env, fmt: str = "json") -> tuple[int, Any]:
    out = env.cli("status", "--format", fmt, check=False)
    assert out.stderr == b""
    text = out.stdout.decode()
    return out.returncode, json.loads(text) if fmt == "json" else text


def test_status_without_a_daemon(env: Env) -> None:
    code, report = status(env)
    assert code == 1
    assert report["daemon"] == {"running": False, "pid": None}
    assert report["status_file"] is None
    code, text = status(env, "text")
    assert code == 1
    assert re.search(r"daemon: +not running", text)

    # What a stopped daemon left behind is reported as stale, not as live data.
    daemon = env.start()
    wait_for(lambda: (control.read_status(env.state) or {}).get("pid") == daemon.pid)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    code, report = status(env)
    assert code == 1
    assert report["status_file"]["pid"] == daemon.pid
    assert report["status_file"]["live"] is False
    assert (report["mode"], report["policy_digest"], report["executions"]) == (None, None, None)
    _, text = status(env, "text")
    assert f"by daemon pid {daemon.pid}, which has stopped" in text
    assert "mode:" not in text


def test_status_of_a_running_daemon(env: Env) -> None:
    daemon = env.start()
    escalated, denied = env.submit(ESCALATES), env.submit(DENIED)
    assert (escalated["state"], denied["state"]) == ("escalated", "rejected")
    wait_for(lambda: (control.read_status(env.state) or {}).get("pid") == daemon.pid)

    code, report = status(env)
    assert code == 0
    assert report["daemon"] == {"running": True, "pid": daemon.pid}
    assert report["status_file"]["live"] is True
    config = load_config(env.config)
    started = next(
        json.loads(line)
        for line in (env.root / "daemon.log").read_text().splitlines()
        if '"event": "started"' in line
    )
    assert report["mode"] == config.mode
    assert report["policy_digest"] == started["policy_digest"]
    assert report["executions"] == {
        "running": 0,
        "max_concurrent": config.auto_executor.max_concurrent,
    }
    counts = report["queue"]["counts"]
    assert {s: n for s, n in counts.items() if n} == {"escalated": 1, "rejected": 1}
    assert report["emergency_stop"] is None
    # Which limits hold, as the daemon found at start-up and reports since.
    assert report["limits"] == started["limits"]
    assert report["limits"]["scope"] in ("per-sandbox", "per-process")
    assert report["limits"]["refused"] == (
        report["limits"]["scope"] != "per-sandbox"
        and not config.auto_executor.accept_per_process_limits
    )
    _, text = status(env, "text")
    rows = [line.split(":", 1) for line in text.splitlines() if ":" in line]
    assert [v.split()[0] for k, v in rows if k.strip() == "limits"] == [report["limits"]["scope"]]

    code, text = status(env, "text")
    assert code == 0
    assert f"running, pid {daemon.pid}" in text
    assert started["policy_digest"] in text
    assert re.search(r"queue: +proposed 0, escalated 1, approved 0, running 0", text)
    assert re.search(r"emergency stop: +not in force", text)


def test_status_shows_the_emergency_stop(env: Env) -> None:
    env.cli("emergency-stop", "--reason", "checking the brakes", check=False)
    code, report = status(env)
    assert code == 1
    flag = report["emergency_stop"]
    assert flag["reason"] == "checking the brakes"
    assert flag["set_by"]
    _, text = status(env, "text")
    assert re.search(
        r"emergency stop: +IN FORCE since .* UTC, set by .*: checking the brakes", text
    )


def test_status_of_a_daemon_reported_by_its_status_file(env: Env) -> None:
    """This process holds the daemon lock and writes daemon.json, so freshness
    and the governor's figures are exact rather than whatever a daemon had."""
    lock = control.DaemonLock.acquire(env.state)
    assert lock is not None
    governor = {"enabled": True, "rate": 0.5, "utilisation": 0.9, "target": 0.6}
    written = {
        "pid": os.getpid(),
        "mode": "beta",
        "policy_digest": "sha256:" + "ab" * 32,
        "policy": "/etc/janus-policy/policies",
        "running": 2,
        "max_concurrent": 3,
        "governor": governor,
    }
    try:
        control.write_status(env.state, {**written, "updated_at": time.time()})
        code, report = status(env)
        assert code == 0
        assert report["status_file"]["live"] is True
        assert report["governor"] == governor
        assert report["executions"] == {"running": 2, "max_concurrent": 3}
        _, text = status(env, "text")
        assert re.search(r"governor: +rate 0\.50 .*, CPU 90%, target 60%", text)
        assert "2 running of at most 3" in text

        # A daemon that stopped writing is still running, but its figures are stale.
        control.write_status(env.state, {**written, "updated_at": time.time() - 1800})
        code, report = status(env)
        assert (code, report["status_file"]["live"]) == (0, False)
        _, text = status(env, "text")
        assert "last updated 30 min ago: stale, the daemon may be stuck" in text
    finally:
        lock.release()
    code, report = status(env)
    assert (code, report["governor"], report["mode"]) == (1, None, None)


def test_status_with_a_damaged_store(env: Env) -> None:
    env.state.mkdir()
    (env.state / "janus.db").write_text("not a database")
    code, report = status(env)
    assert code == 1
    assert report["queue"]["counts"] is None
    assert "not a usable proposal store" in report["queue"]["error"]
    assert report["daemon"]["running"] is False


def test_status_bad_input(env: Env) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "janus_policy", "status", "--config", str(env.root / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "none.yaml" in out.stderr
    assert "Traceback" not in out.stderr
