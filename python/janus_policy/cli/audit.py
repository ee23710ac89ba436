"""`janus-policy audit verify|tail`: check the hash chains of the audit logs,
and read them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from janus_policy.audit import LOG_NAMES, Tail, VerifyResult, log_files, log_of, verify
from janus_policy.cli._common import EXIT_FINDINGS, EXIT_OK, add_format, print_json
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.errors import InputError, Location

#: Fields every record has; the summary of a record shows the others.
_ENVELOPE = frozenset({"v", "ts", "kind", "proposal_id", "policy_digest", "prev", "hash"})
_SUMMARY_WIDTH = 120
_POLL_S = 0.25


def register(verbs: Any) -> None:
    group: argparse.ArgumentParser = verbs.add_parser(
        "audit", help="verify and read the audit logs"
    )
    sub = group.add_subparsers(dest="audit_verb", metavar="VERB", required=True)

    v: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="check that no audit record was changed, dropped or reordered",
        description="Check the hash chain of audit logs, rotated files included. "
        "Exit 0 intact, 1 broken (the first broken record is named), 2 bad input.",
    )
    _add_target(v)
    add_format(v)
    v.set_defaults(handler=run_verify)

    t: argparse.ArgumentParser = sub.add_parser(
        "tail",
        help="print the last audit records, and follow new ones",
        description="Print the last records of audit logs, one line each "
        "(time, kind, proposal id, other fields); --format json prints the records "
        "themselves, one per line.",
    )
    _add_target(t)
    t.add_argument("-n", type=_count, default=10, dest="lines", help="records (default 10)")
    t.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new records until Ctrl-C"
    )
    add_format(t)
    t.set_defaults(handler=run_tail)


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path", nargs="?", type=Path, help="a log file or a state dir (default: the state dir)"
    )
    add_state_options(p)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of records, got {text!r}")
    return int(text)


def _logs(args: argparse.Namespace, *, to_come: bool = False) -> list[Path]:
    """The live files of the logs the arguments name; with `to_come`, every
    log of a state dir, also those not written yet."""
    target: Path = args.path if args.path is not None else config_of(args).harness.state_dir
    if not target.exists():
        raise InputError("E000", "no such log file or state dir", Location(str(target)))
    if target.is_dir():
        logs = [target / name for name in LOG_NAMES if to_come or log_files(target / name)]
        if not logs:
            raise InputError(
                "E000",
                f"no audit logs here (none of {', '.join(LOG_NAMES)})",
                Location(str(target)),
            )
        return logs
    if not log_files(log_of(target)):
        raise InputError("E000", "no such audit log", Location(str(target)))
    return [log_of(target)]


# ---- verify ----


@contextmanager
def _reading() -> Iterator[None]:
    """A log that cannot be read is bad input, named by its path."""
    try:
        yield
    except OSError as e:
        where = Location(str(e.filename)) if e.filename else None
        raise InputError("E000", f"cannot read: {e.strerror or e}", where) from None


def run_verify(args: argparse.Namespace) -> int:
    with _reading():
        results = [(log, verify(log)) for log in _logs(args)]
    ok = all(r.ok for _, r in results)
    if args.format == "json":
        print_json(
            {
                "ok": ok,
                "records": sum(r.records for _, r in results),
                "logs": [_verify_dict(log, r) for log, r in results],
            }
        )
    else:
        for log, r in results:
            print(_verify_text(log, r))
        broken = sum(not r.ok for _, r in results)
        total = sum(r.records for _, r in results)
        verdict = f"{broken} of {len(results)} broken" if broken else f"{len(results)} intact"
        print(f"audit logs: {verdict}; {total} intact records")
    return EXIT_OK if ok else EXIT_FINDINGS


def _verify_dict(log: Path, r: VerifyResult) -> dict[str, Any]:
    bad = r.first_bad
    return {
        "log": str(log),
        "ok": r.ok,
        "records": r.records,
        "files": [str(f) for f in r.files],
        "head": r.head,
        "first_bad": {"path": str(bad.path), "line": bad.line, "reason": bad.reason}
        if bad
        else None,
    }


def _verify_text(log: Path, r: VerifyResult) -> str:
    files = f"{len(r.files)} file{'s' if len(r.files) != 1 else ''}"
    if r.first_bad is None:
        return f"{log}: intact, {r.records} records in {files}, head {r.head}"
    bad = r.first_bad
    return f"{bad.path}:{bad.line}: {bad.reason}\n{log}: broken after {r.records} intact records"


# ---- tail ----


def run_tail(args: argparse.Namespace) -> int:
    emit = _emit_json if args.format == "json" else _emit_text
    with _reading(), ExitStack() as stack:
        tails = [stack.enter_context(Tail(log)) for log in _logs(args, to_come=args.follow)]
        last = sorted((r for t in tails for r in t.last(args.lines)), key=_time)
        for record in last[len(last) - args.lines :] if args.lines else []:
            emit(record)
        sys.stdout.flush()
        while args.follow:
            new = sorted((r for t in tails for r in t.poll()), key=_time)
            for record in new:
                emit(record)
            sys.stdout.flush()
            if not new:
                time.sleep(_POLL_S)
    return EXIT_OK


def _time(record: dict[str, Any]) -> str:
    return str(record.get("ts", ""))


def _emit_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, separators=(",", ":"), ensure_ascii=True))


def _emit_text(record: dict[str, Any]) -> None:
    head = [_safe(record.get(k, "-")) for k in ("ts", "kind", "proposal_id")]
    print(" ".join([*head, summary(record)]).rstrip())


def summary(record: dict[str, Any]) -> str:
    """The record's own fields as `key=value`, cut to one screen line."""
    own = [(k, v) for k, v in record.items() if k not in _ENVELOPE]
    # Scalars first: a nested proposal would otherwise fill the line.
    own.sort(key=lambda kv: isinstance(kv[1], dict | list))
    text = " ".join(f"{k}={_safe(v)}" for k, v in own)
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 1] + "…"


def _safe(value: Any) -> str:
    """A value as text a terminal shows as is: strings with control or
    formatting characters (an agent wrote them) are quoted and escaped."""
    if isinstance(value, str) and value.isprintable() and value:
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
