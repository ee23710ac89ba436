"""`janus-policy proposals …`: submit, inspect, approve, reject, requeue and
export proposals of a state dir."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from janus_policy import documents
from janus_policy.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    add_format,
    arg_text,
    positive,
    print_json,
    table,
)
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.config import AgentConfig
from janus_policy.errors import InputError, Location
from janus_policy.execution.tools import ToolRegistry
from janus_policy.proposals.lifecycle import Lifecycle, operator
from janus_policy.proposals.states import STATES, Conflict, IllegalTransition
from janus_policy.proposals.store import Record
from janus_policy.runtime import control
from janus_policy.text import clean, printable, what


def register(verbs: Any) -> None:
    group: argparse.ArgumentParser = verbs.add_parser(
        "proposals", help="submit, list, show, approve, reject and export proposals"
    )
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("submit", help="record a proposal and print its decision")
    p.add_argument("file", help="the proposal, JSON or YAML; - reads standard input")
    p.add_argument(
        "--wait",
        type=float,
        default=5.0,
        metavar="S",
        help="how long to wait for a running daemon's decision (default 5)",
    )
    p.add_argument("--source", help="who proposes it (default: your user name)")
    _common(p, run_submit)

    p = sub.add_parser("list", help="proposals, newest first")
    p.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="S",
        help=f"only these states (repeatable or comma-separated): {', '.join(STATES)}",
    )
    p.add_argument(
        "--limit", type=positive(int), default=50, metavar="N", help="at most N (default 50)"
    )
    p.add_argument(
        "--since", metavar="T", help="created since: 2026-11-23, an ISO time, or 2h/30m/7d"
    )
    _common(p, run_list)

    p = sub.add_parser("show", help="one proposal: decision, transitions, outcome")
    p.add_argument("id", help="a proposal id or a unique prefix of one")
    _common(p, run_show)

    p = sub.add_parser("watch", help="a live table of recent proposals (Ctrl-C ends it)")
    p.add_argument("--limit", type=positive(int), default=20, metavar="N", help="rows (default 20)")
    p.add_argument(
        "--interval", type=positive(float), default=0.5, metavar="S", help="refresh period"
    )
    p.add_argument("--count", type=int, metavar="N", help=argparse.SUPPRESS)  # for tests
    _common(p, run_watch, formats=False)

    p = sub.add_parser("export", help="every proposal as JSON Lines or CSV, oldest first")
    p.add_argument("--status", action="append", default=[], metavar="S", help="only these states")
    _common(p, run_export, formats=False)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")

    p = sub.add_parser("approve", help="approve an escalated or suspended proposal")
    p.add_argument("id")
    p.add_argument("--note", help="why (recorded with your user name)")
    _common(p, run_approve)

    p = sub.add_parser("reject", help="reject a pending, suspended or interrupted proposal")
    p.add_argument("id")
    p.add_argument("--reason", required=True, help="why (recorded with your user name)")
    _common(p, run_reject)

    p = sub.add_parser("requeue", help="run an interrupted proposal again")
    p.add_argument("id")
    p.add_argument(
        "--force",
        action="store_true",
        help="also when its tool is not idempotent (it may have done part of its work)",
    )
    _common(p, run_requeue)


def _common(p: argparse.ArgumentParser, handler: Any, *, formats: bool = True) -> None:
    add_state_options(p)
    if formats:
        add_format(p)
    p.set_defaults(handler=handler)


def _open(args: argparse.Namespace) -> tuple[AgentConfig, Lifecycle]:
    config = config_of(args)
    return config, Lifecycle.open(config)


# ---- printing ----


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _rows(records: list[Record]) -> list[list[str]]:
    return [
        [
            r.id,
            r.state,
            r.tool,
            r.action_type,
            (r.decision or {}).get("effective_risk", r.proposal["risk"]),
            _when(r.created_at),
            clean(what(r.proposal), 60),
        ]
        for r in records
    ]


HEADER = ["ID", "STATE", "TOOL", "ACTION", "RISK", "CREATED", "WHAT"]


def _summary(r: Record) -> str:
    line = f"{r.id} {r.state}"
    if r.reason:
        line += f": {clean(r.reason)}"
    if r.duplicate_of:
        line += f" (original: {r.duplicate_of})"
    return line


# ---- verbs ----


def _read_proposal(arg: str) -> documents.Document:
    if arg == "-":
        # Bounded: one character over the limit is enough for parse to refuse it.
        text = sys.stdin.read(documents.MAX_BYTES + 1)
        return documents.parse(text, "<stdin>")
    return documents.read(arg)


def run_submit(args: argparse.Namespace) -> int:
    doc = _read_proposal(args.file)
    config, lc = _open(args)
    record = lc.submit(doc, source=arg_text(args.source) if args.source else operator())
    if record.state == "proposed":
        record = _decision_of(record, config, lc, args.wait)
    if args.format == "json":
        print_json(record.to_dict())
    else:
        print(_summary(record))
    return EXIT_OK


def _decision_of(record: Record, config: AgentConfig, lc: Lifecycle, wait: float) -> Record:
    """Only the daemon decides, with the policy and mode it runs under: this
    command wakes it and waits. With no daemon running, the proposal waits
    for one (a decision made here, under this command's configuration, could
    approve what the daemon's would not)."""
    state_dir = config.harness.state_dir
    if control.stop_flag(state_dir) is not None:
        print("emergency stop in force: decided after `janus-policy resume`", file=sys.stderr)
        return record
    if control.signal_daemon(state_dir, control.SIG_WAKE) is None:
        print(
            "no daemon is running: it is decided when one starts "
            "(`janus-policy daemon run`, or `--until-idle` for one pass)",
            file=sys.stderr,
        )
        return record
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = lc.store.get(record.id)
        if current.state != "proposed":
            return current
        time.sleep(0.02)
    print(f"the daemon has not decided within {wait} s", file=sys.stderr)
    return lc.store.get(record.id)


def _since(text: str) -> float:
    m = re.fullmatch(r"(\d+)([smhd])", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - int(m.group(1)) * unit
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            "E301", f"--since {text!r}: expected an ISO date/time or a span like 2h", None, "since"
        ) from None
    return (t if t.tzinfo else t.astimezone()).astimezone(UTC).timestamp()


def _states(values: list[str]) -> list[str]:
    states = [s.strip() for v in values for s in v.split(",") if s.strip()]
    for s in states:
        if s not in STATES:
            hint = documents.did_you_mean(s, list(STATES))
            raise InputError("E302", f"--status {s!r} is not a state{hint}", None, "status")
    return states


def run_list(args: argparse.Namespace) -> int:
    _, lc = _open(args)
    since = _since(args.since) if args.since else None
    records = lc.store.proposals(states=_states(args.status), since=since, limit=args.limit)
    if args.format == "json":
        print_json([r.to_dict() for r in records])
    else:
        print(table(_rows(records), HEADER) if records else "no proposals")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    _, lc = _open(args)
    r = lc.store.get(args.id)
    transitions = lc.store.transitions(r.id)
    if args.format == "json":
        print_json({**r.to_dict(), "transitions": [t.to_dict() for t in transitions]})
        return EXIT_OK
    print(f"proposal {r.id}  [{r.state}]  from {r.source}, {_when(r.created_at)}")
    # ensure_ascii: the agent's text cannot send control characters to the terminal.
    print(json.dumps(r.proposal, indent=2, sort_keys=True, ensure_ascii=True))
    if r.duplicate_of:
        print(f"duplicate of {r.duplicate_of}")
    d = r.decision
    if d:
        print(
            f"\ndecision: {d['decision']}  effective risk {d['effective_risk']}  "
            f"policy {d['policy_digest'][:19]}  ({d['eval_us']:.0f} µs)"
        )
        for m in d["matched"]:
            print(f"  rule {m['id']} ({m['path']}:{m['line']}) {m['decision'] or ''}")
        for reason in d["reasons"]:
            print(f"  - {clean(reason)}")
        if d.get("limits"):
            print("  limits: " + ", ".join(f"{k}={v}" for k, v in d["limits"].items()))
    if r.approvers:
        print(f"\nescalated to {r.approvers}, expires {_when(r.expires_at)} (then {r.on_expiry})")
    if r.approved_by:
        print(f"approved by {r.approved_by}: {clean(r.approval_note) or '-'}")
    print("\ntransitions:")
    for t in transitions:
        print(
            f"  {_when(t.at)}  {t.from_state or '-':>11} → {t.to_state:<11} by {t.actor}"
            + (f": {clean(t.reason)}" if t.reason else "")
        )
    if r.outcome:
        o = r.outcome
        print(
            f"\noutcome: exit {o.get('exit_code')}  limit {o.get('limit')}  "
            f"method {o.get('method')}  wall {o.get('wall_s', 0):.3f} s  "
            f"cpu {o.get('user_s', 0) + o.get('sys_s', 0):.3f} s  "
            f"max RSS {o.get('max_rss_kb')} KiB"
        )
        for stream in ("stdout", "stderr"):
            text = o.get(stream) or ""
            if text:
                cut = " (truncated)" if o.get(f"{stream}_truncated") else ""
                print(f"--- {stream}{cut}\n{printable(text).rstrip()}")
    return EXIT_OK


def run_watch(args: argparse.Namespace) -> int:
    _, lc = _open(args)
    tty = sys.stdout.isatty()
    seen: dict[str, str] = {}
    n = 0
    while args.count is None or n < args.count:
        n += 1
        records = lc.store.proposals(limit=args.limit)
        if tty:  # redraw in place
            sys.stdout.write("\x1b[H\x1b[2J")
            print(f"janus-policy proposals watch — {lc.store.path}  {_when(time.time())}\n")
            print(table(_rows(records), HEADER) if records else "no proposals")
        else:  # one line per change, for logs and pipes
            for r in reversed(records):
                if seen.get(r.id) != r.state:
                    shown = clean(what(r.proposal), 60)
                    print(f"{_when(r.updated_at)} {r.id} {r.state} {shown}")
                    seen[r.id] = r.state
        sys.stdout.flush()
        time.sleep(args.interval)
    return EXIT_OK


EXPORT_FIELDS = (
    "id",
    "state",
    "created_at",
    "updated_at",
    "source",
    "tool",
    "action_type",
    "mission",
    "duplicate_of",
    "policy_digest",
    "reason",
    "approved_by",
    "executions",
    "started_at",
    "finished_at",
)


def run_export(args: argparse.Namespace) -> int:
    _, lc = _open(args)
    records = lc.store.proposals(states=_states(args.status), newest_first=False)
    if args.format == "jsonl":
        for r in records:
            sys.stdout.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
        return EXIT_OK
    writer = csv.writer(sys.stdout)
    writer.writerow([*EXPORT_FIELDS, "decision", "exit_code", "limit", "proposal"])
    for r in records:
        d = r.to_dict()
        writer.writerow(
            [
                *(d[k] for k in EXPORT_FIELDS),
                (r.decision or {}).get("decision"),
                (r.outcome or {}).get("exit_code"),
                (r.outcome or {}).get("limit"),
                json.dumps(r.proposal, sort_keys=True),
            ]
        )
    return EXIT_OK


def _act(args: argparse.Namespace, action: Any) -> int:
    """Runs a human action; a lost race or an illegal step is exit 1."""
    try:
        record: Record = action()
    except (Conflict, IllegalTransition) as e:
        print(f"janus-policy: {e}", file=sys.stderr)
        return EXIT_FINDINGS
    if args.format == "json":
        print_json(record.to_dict())
    else:
        print(_summary(record))
    return EXIT_OK


def run_approve(args: argparse.Namespace) -> int:
    config, lc = _open(args)
    code = _act(
        args,
        lambda: lc.approve(
            args.id, actor=operator(), note=arg_text(args.note) if args.note else None
        ),
    )
    if code == EXIT_OK and control.stop_flag(config.harness.state_dir) is not None:
        print("emergency stop in force: it runs after `janus-policy resume`", file=sys.stderr)
    control.signal_daemon(config.harness.state_dir, control.SIG_WAKE)
    return code


def run_reject(args: argparse.Namespace) -> int:
    _, lc = _open(args)
    return _act(args, lambda: lc.reject(args.id, actor=operator(), reason=arg_text(args.reason)))


def run_requeue(args: argparse.Namespace) -> int:
    config, lc = _open(args)
    record = lc.store.get(args.id)
    if record.state != "interrupted":
        print(
            f"janus-policy: {record.id} is {record.state}: only an interrupted proposal "
            "is requeued",
            file=sys.stderr,
        )
        return EXIT_FINDINGS
    idempotent = ToolRegistry.from_config(config).idempotent(record.proposal)
    if not idempotent and not args.force:
        raise InputError(
            "E303",
            f"tool {record.tool!r} is not idempotent: {record.id} may have done part of its "
            "work before it was interrupted; look at it, then requeue with --force",
            Location(str(lc.store.path)),
            "id",
        )
    reason = "requeued by a human" + ("" if idempotent else " (--force, tool not idempotent)")
    code = _act(args, lambda: lc.requeue(record.id, actor=operator(), reason=reason))
    control.signal_daemon(config.harness.state_dir, control.SIG_WAKE)
    return code
