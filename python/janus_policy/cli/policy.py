"""`janus-policy check | eval | test`: lint a policy, decide one proposal, run
the policy's tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from janus_policy import documents
from janus_policy.cli._common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, add_format, print_json
from janus_policy.config import load_config
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.lint import Finding, lint
from janus_policy.policy.load import BUNDLED_POLICIES, PolicyError, load_policy
from janus_policy.policy.sarif import sarif_log
from janus_policy.policy.testing import TestResult, read_test_file, run_inline_tests, run_test

POLICY_HELP = "policy dir (default: the bundled policies)"


def _count(text: str) -> int:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"expected a whole number 0 or more, not {text!r}")
    return int(text)


def register(verbs: Any) -> None:
    check: argparse.ArgumentParser = verbs.add_parser(
        "check",
        help="lint policy files: schema, semantics, inline tests",
        description="Lint rule sets. Exit 0 clean, 1 findings, 2 usage or unreadable input.",
    )
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="policy dirs or files (default: the --config's policy dir, else the bundled policies)",
    )
    check.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="agent.yaml: check the policy against its tools, mode and maxima too",
    )
    add_format(check, "text", "json", "sarif")
    check.add_argument("--strict", action="store_true", help="warnings count as findings")
    check.add_argument("--max-errors", type=_count, metavar="N", help="print at most N findings")
    check.set_defaults(handler=run_check)

    ev: argparse.ArgumentParser = verbs.add_parser(
        "eval", help="decide one proposal and explain the decision"
    )
    ev.add_argument("--policy", type=Path, default=BUNDLED_POLICIES, help=POLICY_HELP)
    ev.add_argument("--proposal", default="-", help="proposal file (JSON or YAML), - for stdin")
    ev.add_argument("--mode", choices=("alpha", "beta"), default="beta")
    add_format(ev)
    ev.set_defaults(handler=run_eval)

    test: argparse.ArgumentParser = verbs.add_parser(
        "test", help="run the policy's inline tests and test files"
    )
    test.add_argument("--policy", type=Path, default=BUNDLED_POLICIES, help=POLICY_HELP)
    test.add_argument("files", nargs="*", type=Path, help="test files (YAML lists of cases)")
    test.add_argument("--coverage", action="store_true", help="list rules no test exercises")
    add_format(test)
    test.set_defaults(handler=run_test_verb)


def _engine(path: Path) -> PolicyEngine:
    try:
        return PolicyEngine(load_policy(path))
    except PolicyError as e:
        raise e.findings[0] from None


def run_check(args: argparse.Namespace) -> int:
    findings: list[Finding] = []
    settings = None
    paths: list[Path] = args.paths or [BUNDLED_POLICIES]
    if args.config is not None:
        config = load_config(args.config)
        settings = config.policy_settings()
        paths = args.paths or [config.policy_dir]
    for path in paths:
        findings.extend(lint(path, settings, config=args.config))
    errors = [f for f in findings if f.severity == "error"]
    unreadable = any(f.code == "E000" for f in findings)
    shown = findings[: args.max_errors] if args.max_errors is not None else findings
    if args.format == "json":
        print_json({"findings": [f.to_dict() for f in shown], "errors": len(errors)})
    elif args.format == "sarif":
        print_json(sarif_log(shown, successful=not unreadable))
    else:
        for f in shown:
            print(f)
        warnings = len(findings) - len(errors)
        print(f"Found {len(errors)} error(s) and {warnings} warning(s).")
    if unreadable:
        return EXIT_USAGE
    if errors or (args.strict and findings):
        return EXIT_FINDINGS
    return EXIT_OK


def _read_proposal(source: str) -> dict[str, Any]:
    doc = (
        documents.parse(sys.stdin.read(documents.MAX_BYTES + 1), "<stdin>")
        if source == "-"
        else documents.read(source)
    )
    documents.validate(doc, "proposal")
    data: dict[str, Any] = doc.data
    return data


def run_eval(args: argparse.Namespace) -> int:
    engine = _engine(args.policy)
    decision = engine.evaluate(_read_proposal(args.proposal), mode=args.mode)
    if args.format == "json":
        print_json(decision.to_dict())
        return EXIT_OK
    print(f"decision: {decision.decision}   effective risk: {decision.effective_risk}")
    for m in decision.matched:
        what = m.decision or f"risk {m.classify_risk}"
        print(f"  matched {m.id} ({what}) at {m.path}:{m.line}")
    for r in decision.reasons:
        print(f"  reason: {r}")
    if decision.limits:
        print("  limits: " + ", ".join(f"{k}={v}" for k, v in decision.limits.items()))
    if decision.escalation:
        print("  escalation: " + ", ".join(f"{k}={v}" for k, v in decision.escalation.items()))
    print(f"  policy {decision.policy_digest}, {decision.eval_us:.0f} µs")
    return EXIT_OK


def run_test_verb(args: argparse.Namespace) -> int:
    engine = _engine(args.policy)
    results: list[TestResult] = run_inline_tests(engine)
    for f in args.files:
        results.extend(run_test(engine, t) for t in read_test_file(f))
    failed = [r for r in results if not r.passed]
    exercised = {i for r in results for i in r.decision.matched_ids}
    untested = [r for r in engine.policy.rules if r.id not in exercised]
    if args.format == "json":
        print_json(
            {
                "passed": len(results) - len(failed),
                "failed": [
                    {"name": r.name, "location": str(r.location), "explanation": r.explain()}
                    for r in failed
                ],
                "untested_rules": [r.id for r in untested] if args.coverage else None,
            }
        )
    else:
        for r in failed:
            print(f"{r.location}: FAIL {r.name}: {r.explain()}")
        if args.coverage:
            for rule in untested:
                print(f"{rule.location}: no test exercises rule {rule.id}")
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FINDINGS if failed else EXIT_OK
