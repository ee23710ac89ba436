"""`janus-policy daemon run`: the long-lived service (or, with --until-idle,
one pass over everything pending, for cron and tests)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from janus_policy.cli._common import EXIT_OK
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.runtime.daemon import Daemon


def register(verbs: Any) -> None:
    group: argparse.ArgumentParser = verbs.add_parser("daemon", help="run the daemon")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "run",
        help="decide and execute proposals until stopped (SIGTERM); SIGHUP reloads the policy",
        description="Logs are JSON Lines on standard error.",
    )
    add_state_options(p)
    p.add_argument("--policy", type=Path, metavar="DIR", help="policy dir (default: the config's)")
    p.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once nothing is left to decide or run",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    Daemon(config_of(args)).run(until_idle=args.until_idle)
    return EXIT_OK
