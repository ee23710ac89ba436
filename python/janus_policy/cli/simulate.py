"""`janus-policy simulate`: a policy over recorded proposals, and what a change
would flip."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from janus_policy.cli._common import EXIT_OK, add_format, print_json, table
from janus_policy.policy.load import PolicyError
from janus_policy.policy.simulate import Report, Row, simulate


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "simulate",
        help="dry-run a policy over recorded proposals",
        description="Evaluate a policy over recorded proposals; with --baseline, show what flips.",
    )
    p.add_argument("--policy", type=Path, required=True, help="the policy to try")
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        help="JSONL or YAML proposals, decisions.jsonl, or a state dir (its proposal store)",
    )
    p.add_argument("--baseline", type=Path, help="the policy to compare against")
    p.add_argument("--changes-only", action="store_true", help="print only flipped decisions")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    add_format(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    def show(done: int) -> None:
        print(f"\rsimulated {done}", end="", file=sys.stderr, flush=True)

    # A progress line on a terminal; quiet when not one.
    progress = show if sys.stderr.isatty() else None

    try:
        report = simulate(
            args.policy,
            args.input,
            baseline=args.baseline,
            workers=max(1, min(args.workers, os.cpu_count() or 1)),
            progress=progress,
        )
    except PolicyError as e:
        raise e.findings[0] from None
    if progress is not None:
        print(file=sys.stderr)
    rows = report.flips if args.changes_only else report.rows
    if args.format == "json":
        print_json(
            {
                "rows": [r.to_dict() for r in rows],
                "by_decision": dict(report.by_decision),
                "by_rule": dict(report.by_rule.most_common()),
                "flips": len(report.flips),
            }
        )
        return EXIT_OK
    _print_text(report, rows, args.baseline is not None)
    return EXIT_OK


def _print_text(report: Report, rows: list[Row], compare: bool) -> None:
    for r in rows:
        line = f"{r.label}: {r.verdict[0]}"
        if compare and r.baseline is not None and r.flipped:
            d = r.to_dict()
            arrow = "more permissive" if r.more_permissive else "stricter"
            line = f"{r.label}: {r.baseline[0]} -> {r.verdict[0]} ({arrow})"
            if d["rules_added"]:
                line += f"; now matches {', '.join(d['rules_added'])}"
            if d["rules_removed"]:
                line += f"; no longer {', '.join(d['rules_removed'])}"
        elif r.verdict[1]:
            line += f" ({', '.join(r.verdict[1])})"
        print(line)
    total = len(report.rows)
    print()
    print(
        table([[k, str(v)] for k, v in sorted(report.by_decision.items())], ["decision", "count"])
    )
    print()
    print(table([[k, str(v)] for k, v in report.by_rule.most_common()], ["rule", "matched"]))
    summary = f"\n{total} proposals"
    if compare:
        permissive = sum(r.more_permissive for r in report.flips)
        summary += f", {len(report.flips)} flipped ({permissive} more permissive)"
    print(summary)
