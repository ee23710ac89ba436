"""The `janus-policy` command: one module per verb group, each thin over the
library. Exit codes follow linters: 0 fine, 1 findings (or the command's own
status), 2 usage or input errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from janus_policy import __version__
from janus_policy.cli import (
    audit,
    daemon,
    demo,
    emergency,
    missions,
    policy,
    proposals,
    sandbox,
    schema,
    simulate,
    status,
    summary,
)
from janus_policy.cli._common import EXIT_USAGE, fail
from janus_policy.errors import JanusError

GROUPS = (
    demo,
    policy,
    simulate,
    proposals,
    daemon,
    status,
    missions,
    summary,
    emergency,
    audit,
    sandbox,
    schema,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="janus-policy",
        description="Supervised autonomy for an LLM agent: policy, sandbox, audit.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for group in GROUPS:
        group.register(verbs)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except JanusError as e:
        return fail(e)
    except UnicodeError as e:  # bytes on the command line that are not UTF-8
        print(f"janus-policy: error: an argument is not valid UTF-8 ({e})", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `janus-policy ... | head`: not an error of ours.
        sys.stderr.close()
        return EXIT_USAGE
    return code
