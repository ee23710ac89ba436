"""Inline tests: example proposals a rule set carries with the decision the
whole policy must give them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from janus_policy import documents
from janus_policy.errors import InputError, Location
from janus_policy.policy.evaluate import Decision, PolicyEngine
from janus_policy.policy.load import InlineTest


@dataclass(frozen=True)
class TestResult:
    name: str
    location: Location
    expected: str
    decision: Decision
    expected_rules: tuple[str, ...] | None

    @property
    def passed(self) -> bool:
        if self.decision.decision != self.expected:
            return False
        rules = self.expected_rules
        return rules is None or sorted(rules) == sorted(self.decision.matched_ids)

    def explain(self) -> str:
        d = self.decision
        got = f"got {d.decision} (rules: {', '.join(d.matched_ids) or 'none'})"
        want = f"expected {self.expected}"
        if self.expected_rules is not None:
            want += f" (rules: {', '.join(self.expected_rules) or 'none'})"
        where = "; ".join(f"{m.id} at {m.path}:{m.line}" for m in d.matched)
        return (
            f"{want}, {got}"
            + (f"; matched {where}" if where else "")
            + (f"; {d.reasons[-1]}" if d.reasons else "")
        )


def read_test_file(path: Path) -> list[InlineTest]:
    """The cases of a test file (a YAML list), each checked against the
    policy-test schema with its own position."""
    doc = documents.read(path)
    if not isinstance(doc.data, list):
        raise InputError("E105", "a test file is a YAML list of cases", doc.location(()))
    tests = []
    for i, case in enumerate(doc.data):
        positions = {k[1:]: v for k, v in doc.positions.items() if k[:1] == (i,)}
        errors = documents.validation_errors(
            documents.Document(doc.path, case, positions), "policy-test"
        )
        if errors:
            raise errors[0]
        tests.append(InlineTest.from_data(case, doc.location((i,))))
    return tests


def run_test(engine: PolicyEngine, test: InlineTest) -> TestResult:
    decision = engine.evaluate(test.proposal, mode=test.mode)
    return TestResult(test.name, test.location, test.expect, decision, test.rules)


def run_inline_tests(engine: PolicyEngine) -> list[TestResult]:
    return [run_test(engine, t) for rs in engine.policy.rulesets for t in rs.tests]
