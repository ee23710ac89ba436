"""Loading a policy: a directory of YAML rule sets, each read with the
position of every node, validated against the policy schema, and checked for
what a schema cannot see (duplicate ids, bad regular expressions, risk levels
in comparisons). Every problem is collected, not just the first."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from janus_policy import documents
from janus_policy.documents import Document, JsonPath, pointer
from janus_policy.errors import InputError, JanusError, Location
from janus_policy.policy.catalogue import Catalogue, CatalogueLoadError, catalogue_for
from janus_policy.policy.paths import re2_compile

DECISIONS = ("approve", "escalate", "deny")
RISKS = ("none", "low", "medium", "high", "critical")
POLICY_SUFFIXES = (".yaml", ".yml")
#: The default rule sets, shipped inside the package (`policies/` links here).
BUNDLED_POLICIES = Path(__file__).resolve().parent.parent / "policies"


class PolicyError(JanusError):
    """A policy that cannot be used; `findings` lists every problem found."""

    def __init__(self, findings: list[InputError]) -> None:
        self.findings = findings
        super().__init__("\n".join(str(f) for f in findings))


@dataclass(frozen=True, eq=False)
class Rule:
    id: str
    ruleset: str
    location: Location
    when: dict[str, Any]
    when_at: JsonPath
    decision: str | None = None
    classify_risk: str | None = None
    reason: str = ""
    description: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    escalation: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    #: Escalate rules this approving rule carves an exception out of.
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class InlineTest:
    name: str
    location: Location
    proposal: dict[str, Any]
    expect: str
    mode: str = "beta"
    rules: tuple[str, ...] | None = None

    @classmethod
    def from_data(cls, case: dict[str, Any], location: Location) -> InlineTest:
        """From a schema-valid test case (inline, or an entry of a test file)."""
        return cls(
            name=case["name"],
            location=location,
            proposal=case["proposal"],
            expect=case["expect"],
            mode=case.get("mode", "beta"),
            rules=tuple(case["rules"]) if "rules" in case else None,
        )


@dataclass(frozen=True)
class RuleSet:
    name: str
    path: str
    default: str | None
    rules: tuple[Rule, ...]
    tests: tuple[InlineTest, ...]
    document: Document


@dataclass(frozen=True)
class Policy:
    rulesets: tuple[RuleSet, ...]
    #: sha256 over the normalized rule sets and command catalogue.
    digest: str
    catalogue: Catalogue

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for rs in self.rulesets for r in rs.rules)

    @property
    def default(self) -> str:
        """The strictest default of the rule sets; escalate when none says."""
        given = [rs.default for rs in self.rulesets if rs.default]
        return max(given, key=DECISIONS.index) if given else "escalate"


def policy_files(path: Path) -> list[Path]:
    """The rule-set files of a policy: a file, or the YAML files of a dir."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    return [path]


def digest(docs: list[Document]) -> str:
    """sha256 over the normalized rule sets: formatting and comments do not
    change it, content does."""
    normal = sorted(json.dumps(d.data, sort_keys=True, separators=(",", ":")) for d in docs)
    return "sha256:" + hashlib.sha256("\n".join(normal).encode()).hexdigest()


def files_digest(path: Path) -> str:
    """sha256 over the raw bytes of a policy's files: a name for a policy that
    cannot be loaded (and so has no `digest`), to log beside the one kept."""
    h = hashlib.sha256()
    for f in policy_files(path) if path.exists() else []:
        try:
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            h.update(f.name.encode() + b"\0unreadable\0")
    return "sha256:" + h.hexdigest()


def _conditions(cond: Any, at: JsonPath) -> Iterator[tuple[dict[str, Any], JsonPath]]:
    """Every leaf condition (field or command test) with its path."""
    if not isinstance(cond, dict):
        return
    for key in ("all", "any"):
        for i, sub in enumerate(cond.get(key, [])):
            yield from _conditions(sub, (*at, key, i))
    if "not" in cond:
        yield from _conditions(cond["not"], (*at, "not"))
    if "field" in cond or "command" in cond:
        yield cond, at


def _semantic(doc: Document) -> list[InputError]:
    """Checks the schema cannot express, on a schema-valid document."""
    found: list[InputError] = []

    def finding(code: str, message: str, at: JsonPath) -> None:
        found.append(InputError(code, message, doc.location(at), pointer(at)))

    for i, rule in enumerate(doc.data["rules"]):
        for leaf, at in _conditions(rule["when"], ("rules", i, "when")):
            if "matches" in leaf:
                try:
                    re2_compile(leaf["matches"])
                except ValueError as e:
                    message = f"invalid regular expression {leaf['matches']!r} (RE2 syntax): {e}"
                    finding("P102", message, (*at, "matches"))
            if leaf.get("field") != "risk":
                continue
            for op in ("equals", "in", "not_in", "at_least", "at_most"):
                given = leaf.get(op, [])
                bad = [v for v in (given if isinstance(given, list) else [given]) if v not in RISKS]
                if bad:
                    hint = documents.did_you_mean(str(bad[0]), list(RISKS))
                    message = f"{bad[0]!r} is not a risk level ({', '.join(RISKS)}){hint}"
                    finding("P103", message, (*at, op))
    return found


def _ruleset(doc: Document) -> RuleSet:
    data = doc.data
    rules = tuple(
        Rule(
            id=r["id"],
            ruleset=data["ruleset"],
            location=doc.location(("rules", i)),
            when=r["when"],
            when_at=("rules", i, "when"),
            decision=r.get("decision"),
            classify_risk=r.get("classify_risk"),
            reason=r.get("reason", ""),
            description=r.get("description", ""),
            limits=r.get("limits", {}),
            escalation=r.get("escalation"),
            budget=r.get("budget"),
            overrides=tuple(r.get("overrides", ())),
        )
        for i, r in enumerate(data["rules"])
    )
    tests = tuple(
        InlineTest.from_data(t, doc.location(("tests", i)))
        for i, t in enumerate(data.get("tests", []))
    )
    return RuleSet(data["ruleset"], doc.path, data.get("default"), rules, tests, doc)


def load_policy(path: Path | str) -> Policy:
    """Reads every rule set of a policy; raises PolicyError with every finding."""
    root = Path(path)
    if not root.exists():
        raise PolicyError([InputError("E000", "no such file or directory", Location(str(root)))])
    files = policy_files(root)
    if not files:
        raise PolicyError(
            [InputError("P100", "no rule-set files (*.yaml) here", Location(str(root)))]
        )
    docs, findings = documents.read_valid(files, "policy")
    for doc in docs:
        findings.extend(_semantic(doc))
    rulesets = [_ruleset(d) for d in docs]
    seen_rules: dict[str, Location] = {}
    seen_sets: dict[str, str] = {}
    for rs in rulesets:
        if rs.name in seen_sets:
            findings.append(
                InputError(
                    "P104",
                    f"rule set {rs.name!r} is also defined in {seen_sets[rs.name]}",
                    rs.document.location(("ruleset",)),
                    "ruleset",
                )
            )
        seen_sets.setdefault(rs.name, rs.path)
        for rule in rs.rules:
            if rule.id in seen_rules:
                findings.append(
                    InputError(
                        "P101",
                        f"duplicate rule id {rule.id!r} (first at {seen_rules[rule.id]})",
                        rule.location,
                        f"rules.{rule.id}",
                    )
                )
            seen_rules.setdefault(rule.id, rule.location)
    try:
        catalogue = catalogue_for(root if root.is_dir() else None)
    except CatalogueLoadError as e:
        findings.extend(e.findings)
    findings.extend(_exceptions(rulesets))
    if findings:
        raise PolicyError(findings)
    return Policy(tuple(rulesets), digest([*docs, *catalogue.documents]), catalogue)


def _exceptions(rulesets: list[RuleSet]) -> list[InputError]:
    """An exception (`overrides`) approves, and names escalate rules only: deny is absolute."""
    found: list[InputError] = []
    rules = {r.id: r for rs in rulesets for r in rs.rules}
    for rs in rulesets:
        for i, rule in enumerate(rs.rules):
            if not rule.overrides:
                continue
            at = rs.document.location(("rules", i, "overrides"))
            field = pointer(("rules", i, "overrides"))
            if rule.decision != "approve":
                found.append(
                    InputError(
                        "P107",
                        f"rule {rule.id!r}: only an approving rule may override",
                        at,
                        "overrides",
                    )
                )
            for name in rule.overrides:
                target = rules.get(name)
                if target is None:
                    hint = documents.did_you_mean(name, list(rules))
                    message = f"rule {rule.id!r} overrides {name!r}, which is no rule{hint}"
                elif target.decision != "escalate":
                    message = (
                        f"rule {rule.id!r} overrides {name!r}, which decides "
                        f"{target.decision or 'nothing'}: only escalate rules can be overridden "
                        "(deny stays absolute)"
                    )
                else:
                    continue
                found.append(InputError("P107", message, at, field))
    return found
