"""What every verb shares: exit codes, error printing, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from janus_policy.errors import InputError, JanusError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def fail(error: JanusError) -> int:
    """Prints an error the way linters do (`path:line:col: CODE message`)."""
    print(f"janus-policy: error: {error}", file=sys.stderr)
    if isinstance(error, InputError) and error.field and error.field not in str(error):
        print(f"janus-policy: field: {error.field}", file=sys.stderr)
    return EXIT_USAGE


def arg_text(text: str) -> str:
    """Free text from the command line as valid UTF-8: bytes that are not
    (Python keeps them as surrogates) become U+FFFD instead of failing later."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be above zero")
        return value

    return parse


def add_format(p: argparse.ArgumentParser, *choices: str) -> None:
    p.add_argument(
        "--format",
        choices=choices or ("text", "json"),
        default="text",
        help="output format (default: text)",
    )


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain aligned text table."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), line, *(fmt.format(*r) for r in rows)]
    return "\n".join(s.rstrip() for s in out)
