"""The emergency stop, and `resume`.

Stopping does, in this order: write the durable stop flag (from then on
nothing is decided or executed, whatever else fails), signal the daemon so it
kills its sandboxes at once, kill the recorded sandboxes of that daemon
directly too (so a hung daemon cannot keep one alive), and suspend every
pending proposal. Each step after the flag is tried whatever became of the
one before, and the report says which failed. A dry run gathers the same plan
and changes nothing.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from janus_policy.errors import JanusError
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.states import PENDING
from janus_policy.runtime import control


@dataclass
class StopReport:
    dry_run: bool
    flag_was_set: bool
    daemon_pid: int | None
    running: list[str] = field(default_factory=list)
    suspended: list[dict[str, str]] = field(default_factory=list)
    killed_directly: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parent(pid: int) -> int | None:
    """The parent pid of a live process, from /proc (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _kill_sandboxes(lifecycle: Lifecycle, daemon: int, report: StopReport) -> None:
    """SIGKILLs the recorded sandboxes that are still the daemon's children:
    a recorded pid whose process is gone may belong to someone else by now.
    The recorded process is the sandbox's outer one; killing it takes the
    whole sandbox down (bwrap dies with its parent, the pid namespace with
    its init)."""
    for r in lifecycle.store.proposals(states=("running",), newest_first=False):
        pid = r.sandbox_pid
        if pid and _parent(pid) == daemon:
            try:
                os.kill(pid, signal.SIGKILL)
                report.killed_directly.append(pid)
            except ProcessLookupError:
                pass


def _step(report: StopReport, what: str, action: Any) -> None:
    try:
        action()
    except (JanusError, OSError, UnicodeError) as e:
        report.errors.append(f"{what}: {e}")


def emergency_stop(
    state_dir: Path, lifecycle: Lifecycle | None, *, actor: str, reason: str, dry_run: bool = False
) -> StopReport:
    """`lifecycle` is None when the store cannot be opened: the flag and the
    signal still work without it."""
    began = time.monotonic()
    report = StopReport(
        dry_run=dry_run,
        flag_was_set=control.stop_flag(state_dir) is not None,
        daemon_pid=control.daemon_pid(state_dir),
    )
    if lifecycle is None:
        report.errors.append("the proposal store cannot be opened: nothing suspended")

    def gather() -> None:
        assert lifecycle is not None
        store = lifecycle.store
        report.running = [r.id for r in store.proposals(states=("running",), newest_first=False)]
        if dry_run:
            pending = store.proposals(states=PENDING, newest_first=False)
            report.suspended = [{"id": r.id, "was": r.state} for r in pending]

    if lifecycle is not None:
        _step(report, "reading the store", gather)
    if dry_run:
        return report
    control.set_stop_flag(state_dir, actor=actor, reason=reason)  # must not fail quietly
    if report.daemon_pid is not None:
        _step(
            report,
            "signalling the daemon",
            lambda: control.signal_daemon(state_dir, control.SIG_STOP),
        )
    if lifecycle is not None:
        if report.daemon_pid is not None:
            daemon = report.daemon_pid
            _step(report, "killing sandboxes", lambda: _kill_sandboxes(lifecycle, daemon, report))

        def suspend() -> None:
            assert lifecycle is not None
            done = lifecycle.suspend_pending(actor=actor, reason=f"emergency stop: {reason}")
            report.suspended = [{"id": r.id, "was": r.state} for r in done]

        _step(report, "suspending pending proposals", suspend)
        record = {
            "actor": actor,
            "reason": reason,
            "running": report.running,
            "suspended": [s["id"] for s in report.suspended],
            "errors": report.errors,
        }
        _step(
            report,
            "the audit log",
            lambda: lifecycle.audit.decisions.append("emergency_stop", record),
        )
    report.seconds = time.monotonic() - began
    return report


def resume(state_dir: Path, lifecycle: Lifecycle, *, actor: str) -> bool:
    """Clears the stop flag; whether it was set. Suspended proposals stay
    suspended: a human approves or rejects each one. Recorded first, so that
    no resume goes unrecorded."""
    if control.stop_flag(state_dir) is None:
        return False
    lifecycle.audit.decisions.append("resume", {"actor": actor})
    control.clear_stop_flag(state_dir)
    control.signal_daemon(state_dir, control.SIG_WAKE)
    return True
