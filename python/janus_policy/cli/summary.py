"""`janus-policy summary`: the daily report of one state dir, as text, JSON or
a self-contained HTML page."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from janus_policy.cli._common import EXIT_OK, add_format
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.errors import InputError, JanusError
from janus_policy.proposals.store import DB_NAME, Store
from janus_policy.runtime.summary import build_summary, day_bounds, render_html, render_text


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "summary",
        help="the daily report: proposals by decision and state, success rate, resource use, "
        "top rules fired, escalations waiting",
        description="The proposals created on one local calendar day; escalations waiting are "
        "those escalated now, whatever their day. Exit 0, or 2 on bad input.",
    )
    add_state_options(p)
    p.add_argument("--date", metavar="YYYY-MM-DD", help="the day, in local time (default: today)")
    add_format(p, "text", "json", "html")
    p.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(handler=run)


def _day(text: str | None) -> date:
    if text is None:
        return date.today()
    try:
        day = date.fromisoformat(text)
        day_bounds(day)  # the day and the next must be times this system can hold
    except (ValueError, OverflowError):
        raise InputError(
            "E310",
            f"--date {text!r}: expected a calendar date as YYYY-MM-DD, between years 1 and 9999",
            None,
            "date",
        ) from None
    return day


def run(args: argparse.Namespace) -> int:
    day = _day(args.date)
    state_dir = config_of(args).harness.state_dir
    if not (state_dir / DB_NAME).is_file():
        # Opening would create an empty store; a wrong --state-dir should say so.
        raise JanusError(f"no proposal store in {state_dir} (no {DB_NAME}); check --state-dir")
    store = Store(state_dir)
    try:
        summary = build_summary(store, day)
    finally:
        store.close()
    if args.format == "json":
        text = json.dumps(summary.to_dict(), indent=2) + "\n"
    elif args.format == "html":
        text = render_html(summary)
    else:
        text = render_text(summary)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise JanusError(f"cannot write {args.output}: {e.strerror}") from None
    return EXIT_OK
