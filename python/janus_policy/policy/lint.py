"""`check`: every finding about a policy, as `path:line:col: CODE message`.

Errors (the policy cannot be used, or a test fails) and warnings (it can, but
something is probably wrong) are distinguished by severity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from janus_policy.errors import InputError, Location
from janus_policy.policy.evaluate import NUMERIC_LIMITS, PolicyEngine, Settings
from janus_policy.policy.load import PolicyError, load_policy
from janus_policy.policy.testing import run_inline_tests


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


def _error(code: str, message: str, where: Location, field: str = "") -> Finding:
    return Finding("error", InputError(code, message, where, field))


def _warning(code: str, message: str, where: Location, field: str = "") -> Finding:
    return Finding("warning", InputError(code, message, where, field))


def lint(path: Path, settings: Settings | None = None) -> list[Finding]:
    settings = settings or Settings()
    try:
        policy = load_policy(path)
    except PolicyError as e:
        return [Finding("error", f) for f in e.findings]
    found: list[Finding] = []
    by_condition: dict[str, list[tuple[str, str | None, Location]]] = {}
    for rs in policy.rulesets:
        if not rs.rules:
            found.append(
                _warning("W201", f"rule set {rs.name!r} has no rules", rs.document.location(()))
            )
        for rule in rs.rules:
            key = json.dumps(rule.when, sort_keys=True)
            by_condition.setdefault(key, []).append((rule.id, rule.decision, rule.location))
            for k in NUMERIC_LIMITS:
                ceiling = settings.limits.get(k)
                if k in rule.limits and ceiling is not None and rule.limits[k] > ceiling:
                    found.append(
                        _warning(
                            "W203",
                            f"rule {rule.id!r}: {k} {rule.limits[k]} is above the global maximum "
                            f"{ceiling}; the maximum applies",
                            rs.document.location((*rule.when_at[:2], "limits", k)),
                            f"limits.{k}",
                        )
                    )
    for rules in by_condition.values():
        decisions = {d for _, d, _ in rules if d}
        if len(decisions) > 1:
            first = rules[0]
            for rule_id, decision, where in rules[1:]:
                if decision and decision != first[1]:
                    found.append(
                        _error(
                            "P105",
                            f"rule {rule_id!r} ({decision}) has the same condition as "
                            f"{first[0]!r} ({first[1]}) at {first[2]}: only the stricter can "
                            "ever decide",
                            where,
                        )
                    )
    engine = PolicyEngine(policy, settings)
    try:
        for result in run_inline_tests(engine):
            if not result.passed:
                found.append(
                    _error(
                        "P110",
                        f"inline test {result.name!r} fails: {result.explain()}",
                        result.location,
                    )
                )
    finally:
        engine.close()
    return sorted(found, key=_order)


def _order(f: Finding) -> tuple[str, int, int, str]:
    loc = f.error.location or Location("")
    return (loc.path, loc.line, loc.column, f.code)
