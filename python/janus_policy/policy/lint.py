"""`check`: every finding about a policy, as `path:line:col: CODE message`.

Errors (the policy cannot be used, or a test fails) and warnings (it can, but
something is probably wrong) are distinguished by severity. CODES lists every
code a finding can carry, for the guide, SARIF rules and tools.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_policy.errors import InputError, Location
from janus_policy.policy.evaluate import NUMERIC_LIMITS, PolicyEngine, Settings
from janus_policy.policy.load import DECISIONS, PolicyError, Rule, load_policy
from janus_policy.policy.testing import run_inline_tests


@dataclass(frozen=True)
class Code:
    """One kind of finding: its stable code, a short name and what it means."""

    code: str
    name: str
    severity: str  # "error" or "warning"
    description: str


#: Every code `lint` can emit (reading, schema, semantics, tests, warnings), in order.
CODES: tuple[Code, ...] = (
    Code("E000", "UnreadableInput", "error", "A file or directory cannot be read."),
    Code("E001", "InvalidYaml", "error", "The file is not valid YAML."),
    Code("E002", "SeveralDocuments", "error", "The file holds more than one YAML document."),
    Code("E003", "NonStringKey", "error", "A mapping key is not a string."),
    Code("E004", "DuplicateKey", "error", "A mapping has the same key twice."),
    Code("E005", "TooDeep", "error", "The document is nested too deeply."),
    Code("E006", "TooLarge", "error", "The file is larger than the loader accepts."),
    Code("E100", "SchemaViolation", "error", "A value breaks the policy schema."),
    Code("E101", "UnknownKey", "error", "A key the policy schema does not know."),
    Code("E102", "MissingKey", "error", "A required key is missing."),
    Code("E103", "NotAllowedValue", "error", "A value is not one of the allowed values."),
    Code("E104", "NoMatchingForm", "error", "A value matches none of the allowed forms."),
    Code("P100", "NoRuleSets", "error", "The policy directory has no rule-set files."),
    Code("P101", "DuplicateRuleId", "error", "Two rules share an id."),
    Code("P102", "InvalidRegex", "error", "A `matches` pattern is not a valid regular expression."),
    Code("P103", "NotARiskLevel", "error", "A risk comparison names an unknown risk level."),
    Code("P104", "DuplicateRuleSet", "error", "Two files define the same rule set."),
    Code(
        "P105",
        "ShadowedBySameCondition",
        "error",
        "A rule can never decide: a stricter rule has the same condition.",
    ),
    Code(
        "P106",
        "ShadowedByBroaderCondition",
        "error",
        "A rule can never decide: a stricter rule has a broader condition.",
    ),
    Code("P110", "FailingInlineTest", "error", "An inline test does not get its expected result."),
    Code("W201", "EmptyRuleSet", "warning", "A rule set has no rules."),
    Code("W203", "LimitAboveMaximum", "warning", "A rule's limit is above the global maximum."),
)
CODE_INDEX: dict[str, int] = {c.code: i for i, c in enumerate(CODES)}


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    error: InputError

    @property
    def code(self) -> str:
        return self.error.code

    def __str__(self) -> str:
        kind = "" if self.severity == "error" else "warning: "
        where = f"{self.error.location}: " if self.error.location else ""
        return f"{where}{self.error.code} {kind}{self.error.message}"

    def to_dict(self) -> dict[str, object]:
        return {"severity": self.severity, **self.error.to_dict()}


def _finding(code: str, message: str, where: Location, field: str = "") -> Finding:
    """A finding with its code's severity."""
    return Finding(CODES[CODE_INDEX[code]].severity, InputError(code, message, where, field))


def lint(path: Path, settings: Settings | None = None) -> list[Finding]:
    settings = settings or Settings()
    try:
        policy = load_policy(path)
    except PolicyError as e:
        return [Finding("error", f) for f in e.findings]
    found: list[Finding] = []
    for rs in policy.rulesets:
        if not rs.rules:
            found.append(
                _finding("W201", f"rule set {rs.name!r} has no rules", rs.document.location(()))
            )
        for rule in rs.rules:
            for k in NUMERIC_LIMITS:
                ceiling = settings.limits.get(k)
                if k in rule.limits and ceiling is not None and rule.limits[k] > ceiling:
                    found.append(
                        _finding(
                            "W203",
                            f"rule {rule.id!r}: {k} {rule.limits[k]} is above the global maximum "
                            f"{ceiling}; the maximum applies",
                            rs.document.location((*rule.when_at[:2], "limits", k)),
                            f"limits.{k}",
                        )
                    )
    found.extend(_overridden(policy.rules))
    engine = PolicyEngine(policy, settings)
    try:
        for result in run_inline_tests(engine):
            if not result.passed:
                found.append(
                    _finding(
                        "P110",
                        f"inline test {result.name!r} fails: {result.explain()}",
                        result.location,
                    )
                )
    finally:
        engine.close()
    return sorted(found, key=_order)


def _conjuncts(cond: dict[str, Any]) -> frozenset[str] | None:
    """The leaves of a condition that is a leaf or an `all` of leaves (what
    the subsumption check can reason about exactly), else None."""
    leaves = cond.get("all", [cond])
    if any(k in leaf for leaf in leaves for k in ("all", "any", "not")):
        return None
    return frozenset(json.dumps(leaf, sort_keys=True) for leaf in leaves)


def _overridden(rules: Sequence[Rule]) -> list[Finding]:
    """Rules whose decision can never stand: a stricter rule's condition holds
    whenever theirs does (the same leaves, or a subset of them)."""
    found: list[Finding] = []
    shapes = [(r, r.decision, _conjuncts(r.when)) for r in rules if r.decision]
    for rule, decision, mine in shapes:
        if mine is None:
            continue
        for other, stricter, theirs in shapes:
            if other is rule or theirs is None or not theirs <= mine:
                continue
            if DECISIONS.index(stricter) > DECISIONS.index(decision):
                same = "the same condition as" if theirs == mine else "a broader condition in"
                found.append(
                    _finding(
                        "P105" if theirs == mine else "P106",
                        f"rule {rule.id!r} ({decision}) can never decide: {same} "
                        f"{other.id!r} ({stricter}) at {other.location} always wins",
                        rule.location,
                    )
                )
                break
    return found


def _order(f: Finding) -> tuple[str, int, int, str]:
    loc = f.error.location or Location("")
    return (loc.path, loc.line, loc.column, f.code)
