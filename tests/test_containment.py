"""The containment battery, check by check, for each isolation method.

No timing assertions: every check judges what happened (errno, Outcome.limit,
processes left on the host), never how long it took.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from janus_policy.errors import InputError
from janus_policy.execution.sandbox import SandboxRunner, SandboxSettings, SandboxUnavailable
from janus_policy.execution.selftest import CHECKS, Check, CheckResult, run_selftest

#: Checks that spend seconds on purpose.
SLOW = {
    "limit-fork-bomb",
    "limit-cpu",
    "limit-timeout",
    "limit-timeout-sigterm-ignored",
    "dies-with-host-process",
    "fail-closed",
}

#: What the battery must cover, at least.
REQUIRED = {
    "net-egress-ip",
    "net-loopback",
    "net-dns",
    "net-raw-socket",
    "net-dev-tcp",
    "net-only-lo",
    "fs-readonly-root",
    "fs-protected-dirs",
    "fs-workdir",
    "fs-private-tmp",
    "fs-symlink-escape",
    "proc-isolated",
    "caps-dropped",
    "setuid-inert",
    "no-namespaces-no-mounts",
    "ptrace-denied",
    "env-allowlist",
    "limit-fork-bomb",
    "limit-memory",
    "limit-disk-file",
    "limit-tmp-size",
    "limit-cpu",
    "limit-timeout",
    "limit-timeout-sigterm-ignored",
    "no-survivor-double-fork",
    "dies-with-host-process",
    "tiocsti-denied",
    "exit-code",
    "exit-signal",
    "fail-closed",
}

NOBODY = 65534


def require(runner: SandboxRunner) -> str:
    """The runner's method, or a test failure saying why it is unavailable."""
    try:
        return runner.method
    except SandboxUnavailable as e:
        pytest.fail(
            f"sandbox method {runner.settings.method!r} is unavailable on this host "
            f"(JANUS_ALLOW_MISSING_SANDBOX=1 skips instead): {e}",
            pytrace=False,
        )


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.name in SLOW else [])
        for c in CHECKS
    ],
)
def test_containment(runner: SandboxRunner, check: Check) -> None:
    method = require(runner)
    [result] = run_selftest(runner, only=[check.name])
    assert result.method == method
    assert result.passed, f"{check.name} ({method}) must hold: {check.must_hold}\n{result.detail}"


def test_battery_covers_what_it_must() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED, sorted(REQUIRED - set(names))
    assert all(c.must_hold.strip() for c in CHECKS)


def test_check_result_is_json_ready() -> None:
    r = CheckResult("exit-code", "exit 7 gives exit_code 7", True, "exit 7", "native")
    assert json.loads(json.dumps(r.to_dict())) == {
        "name": "exit-code",
        "must_hold": "exit 7 gives exit_code 7",
        "passed": True,
        "detail": "exit 7",
        "method": "native",
    }


def test_unknown_check_is_rejected(runner: SandboxRunner) -> None:
    require(runner)
    with pytest.raises(InputError) as e:
        run_selftest(runner, only=["no-such-check"])
    assert e.value.code == "E210"


def test_battery_refuses_to_run_unsandboxed() -> None:
    runner = SandboxRunner(SandboxSettings(method="unsandboxed", allow_unsandboxed=True))
    with pytest.raises(SandboxUnavailable, match="refuses to run unsandboxed"):
        run_selftest(runner, only=["exit-code"])


def _as_nobody(argv: list[str], *, expose: tuple[Path, Path, Path] | None = None) -> list[str]:
    """`argv` run as uid/gid 65534. With `expose` = (prefix, blocked ancestor,
    scratch dir), the interpreter prefix is first made reachable at its own
    path, in a private mount namespace that only this command sees: a tmpfs
    (mode 755) over the ancestor nobody cannot search, with the prefix bound
    back into it, read-only. Paths stay what they are, symlinks keep working."""
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]
    if expose is None:
        return drop
    script = (
        'mount --bind -o ro "$1" "$3" && mount -t tmpfs -o mode=0755 none "$2" '
        '&& mkdir -p "$1" && mount --bind "$3" "$1" && shift 3 && exec "$@"'
    )
    prefix, blocked, scratch = expose
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        str(prefix),
        str(blocked),
        str(scratch),
        *drop,
    ]


def _unsearchable_ancestor(path: Path) -> Path | None:
    """The first directory above `path` that others cannot search, if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


@pytest.mark.slow
def test_battery_as_unprivileged_user(runner: SandboxRunner, method: str) -> None:
    """The whole battery, through the CLI, as uid 65534: no run_as, bwrap and the
    native method set up their user namespaces unprivileged."""
    require(runner)
    if os.geteuid() != 0:
        pytest.skip("the tests already run unprivileged (euid != 0)")
    for tool in ("setpriv", "unshare"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} (util-linux) is not installed")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "HOME": "/tmp",
    }
    # The interpreter may live under a private home (pyenv in /root).
    prefix = Path(sys.base_prefix).resolve()
    blocked = _unsearchable_ancestor(prefix / "bin")
    scratch = Path(tempfile.mkdtemp(prefix="janus-py-", dir="/tmp"))
    expose = (prefix, blocked, scratch) if blocked else None

    def as_nobody(argv: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_nobody(argv, expose=expose),
            check=False,
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    try:
        scratch.chmod(0o755)
        probe = as_nobody([sys.executable, "-c", "import janus_policy.execution.selftest"], 60)
        if probe.returncode != 0:
            why = probe.stderr.strip().splitlines()[-1:] or [f"exit {probe.returncode}"]
            pytest.skip(f"janus_policy is not importable by uid {NOBODY}: {why[0]}")
        cli = [sys.executable, "-m", "janus_policy", "sandbox", "selftest", "--method", method]
        done = as_nobody([*cli, "--format", "json"], 600)
    finally:
        scratch.rmdir()
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr}"
    report = json.loads(done.stdout)
    assert report["method"] == method
    failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["passed"]]
    assert not failed, "\n".join(failed)
    assert [c["name"] for c in report["checks"]] == [c.name for c in CHECKS]
    assert done.returncode == 0
