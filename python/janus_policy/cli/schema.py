"""`janus-policy schema [NAME]`: print a JSON Schema of the package."""

from __future__ import annotations

import argparse
from typing import Any

from janus_policy import documents
from janus_policy.cli._common import EXIT_OK, print_json
from janus_policy.errors import InputError


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "schema", help="print a JSON Schema", description="Print one of the JSON Schemas."
    )
    p.add_argument("name", nargs="?", help="schema name; omit to list them")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = documents.schema_names()
    if args.name is None:
        print("\n".join(names))
        return EXIT_OK
    if args.name not in names:
        raise InputError("E010", f"unknown schema {args.name!r}; one of: {', '.join(names)}")
    print_json(documents.schema(args.name))
    return EXIT_OK
