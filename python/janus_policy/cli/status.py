"""`janus-policy status`: whether a daemon runs on a state dir and what it is doing.

Exit codes: 0 a daemon runs, 1 none does, 2 bad input.

What the daemon reports (mode, policy, executions, governor) comes from its
`daemon.json`, and only while that daemon runs; a file left by a daemon that is
gone is reported as stale, with its age, never as live data. Queue sizes and
the emergency-stop flag are read from the state dir itself, so they are right
with or without a daemon.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from janus_policy.cli._common import EXIT_FINDINGS, EXIT_OK, add_format, print_json
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.errors import JanusError
from janus_policy.proposals.states import PENDING, STATES
from janus_policy.proposals.store import DB_NAME, Store
from janus_policy.runtime import control

#: The daemon rewrites daemon.json every second; older than this, it is stuck.
STALE_AFTER_S = 5.0


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "status",
        help="whether a daemon runs, its mode, policy, queue sizes, emergency stop, governor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_state_options(p)
    add_format(p)
    p.set_defaults(handler=run)


def _status_file(
    state_dir: Path, pid: int | None, now: float
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """daemon.json's age and whether it is live (written lately by the running
    daemon), and what it says if the running daemon wrote it."""
    data = control.read_status(state_dir)
    path = str(state_dir / control.DAEMON_STATUS)
    if data is None:
        return None, {}
    updated = data.get("updated_at")
    # A time that is not a real moment (Infinity, far future) is unreadable,
    # never "fresh": the file is not trusted over the daemon lock.
    if data.get("unreadable") or not isinstance(updated, int | float) or not now >= updated:
        return {"path": path, "unreadable": True, "live": False}, {}
    age = max(0.0, now - updated)
    by_running = pid is not None and data.get("pid") == pid
    meta = {
        "path": path,
        "pid": data.get("pid"),
        "updated_at": updated,
        "age_s": round(age, 3),
        "by_running_daemon": by_running,
        "live": by_running and age <= STALE_AFTER_S,
    }
    return meta, data if by_running else {}


def _queue(state_dir: Path) -> dict[str, Any]:
    """Proposals by state, from the store; none yet without a store (opening
    one would create it)."""
    if not (state_dir / DB_NAME).is_file():
        return {"counts": dict.fromkeys(STATES, 0), "shed": 0, "error": None}
    try:
        store = Store(state_dir)
        try:
            counts = store.counts()
            shed = store.shed()
        finally:
            store.close()
    except JanusError as e:  # locked or damaged: the rest of the status still holds
        return {"counts": None, "shed": None, "error": str(e)}
    return {"counts": {s: counts.get(s, 0) for s in STATES}, "shed": shed, "error": None}


def gather(state_dir: Path) -> dict[str, Any]:
    pid = control.daemon_pid(state_dir) if state_dir.is_dir() else None
    status, own = _status_file(state_dir, pid, time.time())
    governor = own.get("governor")
    return {
        "state_dir": str(state_dir),
        "state_dir_exists": state_dir.is_dir(),
        "daemon": {"running": pid is not None, "pid": pid},
        "status_file": status,
        "mode": own.get("mode"),
        "policy_digest": own.get("policy_digest"),
        "policy": own.get("policy"),
        "executions": (
            {"running": own.get("running"), "max_concurrent": own.get("max_concurrent")}
            if own
            else None
        ),
        "governor": governor if isinstance(governor, dict) else None,
        "limits": own.get("limits"),
        "queue": _queue(state_dir),
        "emergency_stop": control.stop_flag(state_dir),
    }


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):  # a flag file edited by hand
        return "an unknown time"


def _status_line(report: dict[str, Any]) -> str:
    status = report["status_file"]
    if status is None:
        return "none written"
    if status.get("unreadable"):
        return f"{status['path']} is unreadable"
    age = _age(status["age_s"])
    if status["live"]:
        return f"updated {age} ago"
    if status["by_running_daemon"]:
        return f"last updated {age} ago: stale, the daemon may be stuck"
    if report["daemon"]["running"]:
        return f"not yet written by this daemon (the file is {age} old, from pid {status['pid']})"
    return f"stale: written {age} ago by daemon pid {status['pid']}, which has stopped"


def _stop_line(flag: dict[str, Any] | None) -> str:
    if flag is None:
        return "not in force"
    if flag.get("unreadable"):
        return "IN FORCE (the flag file is unreadable; nothing executes until `resume`)"
    return (
        f"IN FORCE since {_when(flag.get('set_at'))}, set by {flag.get('set_by', '?')}: "
        f"{flag.get('reason', '')}"
    )


def _governor_line(governor: dict[str, Any]) -> str:
    if governor.get("enabled") is False:
        return "off"
    parts = []
    for key, fmt in (
        ("rate", "rate {:.2f} (1.00 is the configured pace)"),
        ("utilisation", "CPU {:.0%}"),
        ("target", "target {:.0%}"),
    ):
        value = governor.get(key)
        if isinstance(value, int | float):
            parts.append(fmt.format(value))
    return ", ".join(parts) or "no measurement yet"


def _queue_lines(queue: dict[str, Any]) -> list[tuple[str, str]]:
    counts = queue["counts"]
    if counts is None:
        return [("proposals", f"unknown: {queue['error']}")]
    pending = ", ".join(f"{s} {counts[s]}" for s in (*PENDING, "running"))
    rest = ", ".join(f"{s} {n}" for s, n in counts.items() if n and s not in (*PENDING, "running"))
    return [
        ("queue", pending),
        ("other proposals", rest or "none"),
        ("relief valve", f"{queue['shed']} shed (rejected as over the pending bound)"),
    ]


def render(report: dict[str, Any]) -> str:
    daemon = report["daemon"]
    rows: list[tuple[str, str]] = []
    if daemon["running"]:
        rows.append(("daemon", f"running, pid {daemon['pid']}"))
    else:
        where = "" if report["state_dir_exists"] else " (the state dir does not exist)"
        rows.append(("daemon", f"not running{where}"))
    rows.append(("status file", _status_line(report)))
    if report["mode"] is not None:
        rows.append(("mode", str(report["mode"])))
        rows.append(("policy", f"{report['policy_digest']} ({report['policy']})"))
        ex = report["executions"]
        rows.append(("executions", f"{ex['running']} running of at most {ex['max_concurrent']}"))
    limits = report["limits"]
    if isinstance(limits, dict):
        why = f" ({limits.get('reason')})" if limits.get("reason") else ""
        refused = "; auto-execution refused" if limits.get("refused") else ""
        rows.append(("limits", f"{limits.get('scope')}{why}{refused}"))
    if report["governor"] is not None:
        rows.append(("governor", _governor_line(report["governor"])))
    rows.append(("emergency stop", _stop_line(report["emergency_stop"])))
    rows.extend(_queue_lines(report["queue"]))
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"state dir {report['state_dir']}"]
    lines += [f"  {k + ':':<{width}}{v}" for k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = gather(config_of(args).harness.state_dir)
    if args.format == "json":
        print_json(report)
    else:
        print(render(report))
    return EXIT_OK if report["daemon"]["running"] else EXIT_FINDINGS
