"""`janus-policy demo`: the daemon at work on the bundled policies, with a
report of what happened and where to look."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from janus_policy.cli._common import EXIT_FINDINGS, EXIT_OK, add_format, print_json
from janus_policy.proposals.store import Record
from janus_policy.runtime.demo import DemoRun, Step, run_demo
from janus_policy.text import clean, what


def _program() -> str:
    """How to run janus-policy again: by name if it is on PATH, else by the
    path this one was started from (a virtualenv's, under `nox -s demo`)."""
    me = Path(sys.argv[0])
    if me.name == "janus-policy" and shutil.which("janus-policy") is None:
        return str(me.resolve())
    return "janus-policy"


PROG = _program()


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "demo",
        help="run the daemon on the bundled policies and a scripted agent; report what happened",
        description="A real daemon, SQLite store, audit logs and sandboxed executions in a new "
        "directory (kept for you to inspect). Exit 1 if a step ends otherwise than the script "
        "expects or an audit chain does not verify.",
    )
    p.add_argument(
        "--dir", type=Path, help="an empty directory to use (default: a new one in /tmp)"
    )
    add_format(p)
    p.set_defaults(handler=run)


def _what(step: Step) -> str:
    args = step.proposal.get("args")
    if isinstance(args, dict) and "path" in args:  # the corpus: its name says enough
        return what({**step.proposal, "args": {**args, "path": Path(args["path"]).name}})
    return what(step.proposal)


def _detail(r: Record) -> str:
    o = r.outcome
    if o:
        ran = f"exit {o['exit_code']}, {o['wall_s']:.3f} s, {o['method']}"
        if o.get("limit") not in (None, "none"):
            ran += f"; {o['limit']} limit"
        first = (o.get("stdout") or o.get("stderr") or "").strip().splitlines()
        return ran + (f"; says: {clean(first[0], 60)}" if first else "")
    why = clean(r.reason, 100)
    return f"waits for {r.approvers}: {why}" if r.state == "escalated" else why


def report(run: DemoRun) -> str:
    lines = [
        f"Janus Policy demo: a real daemon on the bundled policies; its thinking cycle proposes "
        f"{len(run.steps)} actions from a script for mission {run.mission.get('id')}, "
        "then an operator steps in.",
        "",
    ]
    states: Counter[str] = Counter()
    for n, step in enumerate(run.steps, 1):
        r = run.records.get(step.id or "")
        state = run.state(step)
        states[state] += 1
        by = f" (approved by {r.approved_by})" if r and r.approved_by else ""
        odd = "" if state == step.expect else f"  ✗ EXPECTED {step.expect}"
        lines.append(f"{n:>2}  {state:<10} {_what(step)[:70]}{by}{odd}")
        lines.append(f"    {'':<10} {step.shows}")
        lines.append(f"    {'':<10} → {_detail(r) if r else 'the agent never proposed it'}")
    outcomes = [r.outcome for r in run.records.values() if r.outcome]
    methods = sorted({o["method"] for o in outcomes})
    lines += [
        "",
        "By state: " + ", ".join(f"{k} {v}" for k, v in states.most_common()),
        f"Sandboxed executions: {len(outcomes)} ({', '.join(methods)}); "
        f"CPU {sum(o['user_s'] + o['sys_s'] for o in outcomes):.2f} s, "
        f"wall {sum(o['wall_s'] for o in outcomes):.2f} s, "
        f"largest RSS {max((o['max_rss_kb'] for o in outcomes), default=0) / 1024:.1f} MiB",
        f"As the script expects: {len(run.steps) - len(run.surprises)} of {len(run.steps)} steps",
        f"Mission {run.mission.get('id')}: {run.mission.get('status')}, "
        f"{run.mission.get('proposals')} of {run.mission.get('budget')} proposals used",
        "Audit logs: "
        + ", ".join(f"{k} {'verified' if ok else 'BROKEN'}" for k, ok in run.audit_ok.items()),
        f"Took {run.seconds:.1f} s.",
        "",
        "The day's summary (`janus-policy summary`):",
        "",
        run.summary,
        "",
        f"State, logs and outputs are kept in {run.root}:",
        f"  {PROG} proposals list --config {run.config}",
        f"  {PROG} proposals show ID --config {run.config}",
        f"  {PROG} audit verify --config {run.config}",
        f"  the daemon's log (JSON Lines): {run.root / 'daemon.log'}",
        f"  the nodes node_generator wrote: {run.root / 'nodes'}",
        f"  {PROG} summary --format html --output summary.html --config {run.config}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = run_demo(args.dir)
    if args.format == "json":
        print_json(
            {
                "root": str(result.root),
                "steps": [
                    {
                        "shows": s.shows,
                        "expect": s.expect,
                        "proposal": s.proposal,
                        "record": result.records[s.id].to_dict() if s.id else None,
                    }
                    for s in result.steps
                ],
                "audit_ok": result.audit_ok,
                "mission": result.mission,
                "surprises": [s.shows for s in result.surprises],
                "seconds": result.seconds,
            }
        )
    else:
        print(report(result))
    return EXIT_OK if all(result.audit_ok.values()) and not result.surprises else EXIT_FINDINGS
