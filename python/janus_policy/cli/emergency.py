"""`janus-policy emergency-stop` and `janus-policy resume`.

Exit codes of emergency-stop: 0 stopped with a daemon found (and signalled), 1
stopped but no daemon was running (the flag still holds for the next one), 2
bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from janus_policy.audit import AuditLogs
from janus_policy.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    add_format,
    arg_text,
    print_json,
)
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.config import state_dir_of
from janus_policy.errors import InputError, JanusError
from janus_policy.proposals.lifecycle import Lifecycle, operator
from janus_policy.proposals.store import Store
from janus_policy.runtime import control
from janus_policy.runtime.emergency import StopReport, emergency_stop, resume


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "emergency-stop",
        help="kill every sandbox, suspend everything pending, execute nothing until resume",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_state_options(p)
    p.add_argument("--dry-run", action="store_true", help="print what would happen; change nothing")
    p.add_argument("--reason", default="operator emergency stop", help="recorded with the stop")
    add_format(p)
    p.set_defaults(handler=run_stop)

    p = verbs.add_parser("resume", help="clear the emergency stop")
    add_state_options(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=run_resume)


def _print(report: StopReport) -> None:
    verb = "would" if report.dry_run else "did"
    print(f"emergency stop ({'dry run' if report.dry_run else 'done'}):")
    flag = "already set" if report.flag_was_set else "set"
    print(f"  stop flag: {flag if not report.dry_run else 'would be set'}")
    daemon = f"pid {report.daemon_pid}" if report.daemon_pid else "none running"
    print(f"  daemon: {daemon}{' (signalled)' if report.daemon_pid and not report.dry_run else ''}")
    print(
        f"  running executions {verb} get killed: {len(report.running)}"
        + (f" ({', '.join(report.running)})" if report.running else "")
    )
    print(f"  pending proposals {verb} get suspended: {len(report.suspended)}")
    for s in report.suspended:
        print(f"    {s['id']} (was {s['was']})")
    for error in report.errors:
        print(f"  FAILED: {error}")
    if not report.dry_run:
        print(
            f"  took {report.seconds * 1000:.0f} ms; nothing executes until `janus-policy resume`"
        )


def _state_dir(args: argparse.Namespace) -> Path:
    """Where to stop. A broken agent.yaml must not keep anyone from stopping:
    its state dir (or --state-dir, JANUS_STATE_DIR) is read without it."""
    try:
        state_dir: Path = config_of(args).harness.state_dir
    except InputError as e:
        state_dir = state_dir_of(args.config, args.state_dir)
        print(f"janus-policy: warning: {e}; stopping {state_dir}", file=sys.stderr)
    return state_dir


def _open(state_dir: Path) -> Lifecycle | None:
    try:
        return Lifecycle(Store(state_dir), AuditLogs(state_dir))
    except JanusError as e:
        print(f"janus-policy: warning: {e}", file=sys.stderr)
        return None


def run_stop(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    report = emergency_stop(
        state_dir,
        _open(state_dir),
        actor=operator(),
        reason=arg_text(args.reason),
        dry_run=args.dry_run,
    )
    if args.format == "json":
        print_json(report.to_dict())
    else:
        _print(report)
    return EXIT_OK if report.daemon_pid is not None else EXIT_FINDINGS


def run_resume(args: argparse.Namespace) -> int:
    config = config_of(args)
    state_dir = config.harness.state_dir
    flag = control.stop_flag(state_dir)
    if flag is None:
        print("no emergency stop is in force")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            print("janus-policy: resume needs --yes when not on a terminal", file=sys.stderr)
            return EXIT_USAGE
        answer = input(
            f"emergency stop set by {flag.get('set_by')}: {flag.get('reason')}. "
            "Resume execution? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("not resumed")
            return EXIT_FINDINGS
    resume(state_dir, Lifecycle.open(config), actor=operator())
    print("resumed: suspended proposals stay suspended until approved or rejected")
    return EXIT_OK
