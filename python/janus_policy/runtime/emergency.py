"""The emergency stop, and `resume`.

Stopping does, in this order: write the durable stop flag (from then on
nothing is decided or executed, whatever else fails), signal the daemon so it
kills its sandboxes at once, kill every recorded sandbox directly too (so a
hung daemon cannot keep one alive), and suspend every pending proposal. A dry
run gathers exactly the same plan and changes nothing.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.states import PENDING
from janus_policy.runtime import control


@dataclass
class StopReport:
    dry_run: bool
    flag_was_set: bool
    daemon_pid: int | None
    running: list[str] = field(default_factory=list)
    sandbox_pids: list[int] = field(default_factory=list)
    suspended: list[dict[str, str]] = field(default_factory=list)
    killed_directly: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def emergency_stop(
    state_dir: Path, lifecycle: Lifecycle, *, actor: str, reason: str, dry_run: bool = False
) -> StopReport:
    began = time.monotonic()
    running = lifecycle.store.proposals(states=("running",), newest_first=False)
    report = StopReport(
        dry_run=dry_run,
        flag_was_set=control.stop_flag(state_dir) is not None,
        daemon_pid=control.daemon_pid(state_dir),
        running=[r.id for r in running],
        sandbox_pids=[r.sandbox_pid for r in running if r.sandbox_pid],
    )
    if dry_run:
        pending = lifecycle.store.proposals(states=PENDING, newest_first=False)
        report.suspended = [{"id": r.id, "was": r.state} for r in pending]
        return report
    control.set_stop_flag(state_dir, actor=actor, reason=reason)
    if report.daemon_pid is not None:
        control.signal_daemon(state_dir, control.SIG_STOP)
    for pid in report.sandbox_pids:
        # The recorded pid is the sandbox's outer process: killing it takes the
        # whole sandbox down (bwrap dies with its parent, and the pid namespace
        # with its init).
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                report.killed_directly.append(pid)
            except ProcessLookupError:
                pass
    suspended = lifecycle.suspend_pending(actor=actor, reason=f"emergency stop: {reason}")
    report.suspended = [{"id": r.id, "was": r.state} for r in suspended]
    lifecycle.audit.decisions.append(
        "emergency_stop",
        {
            "actor": actor,
            "reason": reason,
            "running": report.running,
            "suspended": [s["id"] for s in report.suspended],
        },
    )
    report.seconds = time.monotonic() - began
    return report


def resume(state_dir: Path, lifecycle: Lifecycle, *, actor: str) -> bool:
    """Clears the stop flag; whether it was set. Suspended proposals stay
    suspended: a human approves or rejects each one."""
    was_set = control.clear_stop_flag(state_dir)
    if was_set:
        lifecycle.audit.decisions.append("resume", {"actor": actor})
        control.signal_daemon(state_dir, control.SIG_WAKE)
    return was_set
