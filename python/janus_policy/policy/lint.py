"""`check`: every finding about a policy, as `path:line:col: CODE message`.

Errors (the policy cannot be used, or a test fails) and warnings (it can, but
something is probably wrong) are distinguished by severity. CODES lists every
code a finding can carry, for the guide, SARIF rules and tools.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_policy.documents import Document
from janus_policy.errors import InputError, Location
from janus_policy.policy.catalogue import Catalogue, bundled_catalogue
from janus_policy.policy.command import parse_command
from janus_policy.policy.evaluate import NUMERIC_LIMITS, PolicyEngine, Settings
from janus_policy.policy.load import DECISIONS, Policy, PolicyError, Rule, load_policy
from janus_policy.policy.paths import resolve
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
    Code("E007", "AliasBomb", "error", "YAML aliases expand to more nodes than the loader builds."),
    Code("E008", "TooManyNodes", "error", "The document has more nodes than the loader builds."),
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
    Code(
        "P107",
        "BadException",
        "error",
        "An `overrides` exception is not on an approving rule, or names no escalate rule.",
    ),
    Code("P108", "TooComplex", "error", "A rule's condition is too complex for the rules engine."),
    Code("P110", "FailingInlineTest", "error", "An inline test does not get its expected result."),
    Code(
        "K001", "FailingCatalogueExample", "error", "A catalogue example does not parse as it says."
    ),
    Code("K002", "DuplicateOption", "error", "A catalogue spec lists an option spelling twice."),
    Code("K003", "EnumWithoutValues", "error", "A catalogue option takes an enum but lists none."),
    Code("K004", "CommandNotLast", "error", "A catalogue spec's command operand is not its last."),
    Code("W201", "EmptyRuleSet", "warning", "A rule set has no rules."),
    Code("W203", "LimitAboveMaximum", "warning", "A rule's limit is above the global maximum."),
    Code(
        "W204",
        "ApprovesByBasename",
        "warning",
        "An approving rule names programs by basename (`names`), which any path matches.",
    ),
    Code(
        "W205",
        "ApprovesUncataloguedProgram",
        "warning",
        "An approving rule names a program the command catalogue does not know.",
    ),
    Code(
        "W206",
        "WorkDirOnlyGlob",
        "warning",
        "A deny rule's relative `**/` glob matches only inside the work dir.",
    ),
    Code("W207", "UnmentionedTool", "warning", "A configured tool that no rule names."),
    Code(
        "W208",
        "ApprovesUnsafeTool",
        "warning",
        "A rule approves a tool that is not read-only, idempotent and reversible (mode beta "
        "escalates it), or that is not configured.",
    ),
    Code("W210", "Exception", "warning", "A rule carves an exception out of an escalate rule."),
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


def lint(
    path: Path, settings: Settings | None = None, *, config: Path | None = None
) -> list[Finding]:
    """Every finding about the policy at `path`. With `config` (the agent.yaml `settings` come
    from), its tools are checked against the rules too."""
    try:
        policy = load_policy(path)
    except PolicyError as e:
        return [Finding("error", f) for f in e.findings]
    return lint_policy(policy, settings, config=config)


def lint_policy(
    policy: Policy, settings: Settings | None = None, *, config: Path | None = None
) -> list[Finding]:
    """Every finding about a loaded policy (what `lint` adds to loading it)."""
    settings = settings or Settings()
    found: list[Finding] = []
    for rs in policy.rulesets:
        if not rs.rules:
            found.append(
                _finding("W201", f"rule set {rs.name!r} has no rules", rs.document.location(()))
            )
        for rule in rs.rules:
            found.extend(_rule_warnings(rule, rs.document, settings, policy.catalogue))
    if config is not None:
        found.extend(_unmentioned_tools(policy.rules, settings, config))
    found.extend(_overridden(policy.rules))
    bundled = {id(d) for d in bundled_catalogue().documents}
    own = [d for d in policy.catalogue.documents if id(d) not in bundled]
    found.extend(catalogue_examples(own, policy.catalogue))
    try:
        engine = PolicyEngine(policy, settings)
    except PolicyError as e:
        return sorted([*found, *(Finding("error", f) for f in e.findings)], key=_order)
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


def _command_leaves(cond: Any) -> list[tuple[dict[str, Any], bool]]:
    """The `command` tests of a condition, each with whether it is negated."""
    out: list[tuple[dict[str, Any], bool]] = []

    def walk(c: Any, negated: bool) -> None:
        if not isinstance(c, dict):
            return
        for key in ("all", "any"):
            for sub in c.get(key, []):
                walk(sub, negated)
        if "not" in c:
            walk(c["not"], not negated)
        if "command" in c:
            out.append((c["command"], negated))

    walk(cond, False)
    return out


def _field_values(cond: Any, name: str) -> set[Any] | None:
    """The values a condition's top-level `all` pins field `name` to (None: not pinned)."""
    leaves = cond.get("all", [cond]) if isinstance(cond, dict) else []
    for leaf in leaves:
        if isinstance(leaf, dict) and leaf.get("field") == name:
            if "equals" in leaf:
                return {leaf["equals"]}
            if "in" in leaf:
                return set(leaf["in"])
    return None


def _rule_warnings(
    rule: Rule, doc: Document, settings: Settings, catalogue: Catalogue
) -> list[Finding]:
    found: list[Finding] = []
    at = rule.when_at[:2]
    for k in NUMERIC_LIMITS:
        ceiling = settings.limits.get(k)
        if k in rule.limits and ceiling is not None and rule.limits[k] > ceiling:
            found.append(
                _finding(
                    "W203",
                    f"rule {rule.id!r}: {k} {rule.limits[k]} is above the global maximum "
                    f"{ceiling}; the maximum applies",
                    doc.location((*at, "limits", k)),
                    f"limits.{k}",
                )
            )
    for command, negated in _command_leaves(rule.when):
        if rule.decision == "approve" and not negated:
            if "names" in command:
                found.append(
                    _finding(
                        "W204",
                        f"rule {rule.id!r} approves programs by basename "
                        f"({', '.join(command['names'])}): any path with that name matches; "
                        "use `programs`",
                        rule.location,
                    )
                )
            unknown = [p for p in command.get("programs", []) if catalogue.identify(p) is None]
            if unknown:
                found.append(
                    _finding(
                        "W205",
                        f"rule {rule.id!r} approves {', '.join(unknown)}, which the command "
                        "catalogue does not know: nothing about it can be judged (add a spec "
                        "to the policy's catalogue/)",
                        rule.location,
                    )
                )
        if rule.decision == "deny":
            for key in ("touches", "reads_any", "writes_any"):
                for glob in command.get(key, []):
                    if glob.startswith("**/"):
                        found.append(
                            _finding(
                                "W206",
                                f"rule {rule.id!r}: {glob!r} matches only inside the work dir; "
                                f"write '/{glob}' to match anywhere",
                                rule.location,
                            )
                        )
    if rule.decision == "approve":
        tools = _field_values(rule.when, "tool")
        for name in sorted(tools or ()):
            spec = settings.tools.get(name) if isinstance(name, str) else None
            if spec is None:
                why = "is not a configured tool: nothing can run it"
            elif not spec.safe_to_automate and not spec.takes_command:
                why = "is not read-only, idempotent and reversible: mode beta escalates it"
            else:
                continue
            found.append(
                _finding(
                    "W208", f"rule {rule.id!r} approves tool {name!r}, which {why}", rule.location
                )
            )
    for name in rule.overrides:
        found.append(
            _finding(
                "W210",
                f"rule {rule.id!r} is an exception to {name!r}: where it matches, {name!r} "
                "takes no part",
                rule.location,
            )
        )
    return found


def _unmentioned_tools(rules: Sequence[Rule], settings: Settings, config: Path) -> list[Finding]:
    named: set[Any] = set()
    for rule in rules:
        named |= _field_values(rule.when, "tool") or set()
        text = json.dumps(rule.when)
        named |= {t for t in settings.tools if json.dumps(t) in text}
    return [
        _finding(
            "W207",
            f"tool {name!r} is configured, but no rule names it: its proposals get the policy "
            "default",
            Location(str(config)),
        )
        for name in sorted(settings.tools)
        if name not in named
    ]


def catalogue_examples(docs: Sequence[Document], catalogue: Catalogue) -> list[Finding]:
    """Each catalogue file's `tests`: an argv parses (with the paths given) or is opaque, under
    `catalogue`. `check` runs a policy's own files' examples (the bundled ones hold for the
    bundled catalogue, which the test suite checks; a policy may narrow a bundled spec)."""
    found: list[Finding] = []
    for doc in docs:
        for i, case in enumerate(doc.data.get("tests", [])):
            problem = _example_problem(case, catalogue)
            if problem:
                found.append(
                    _finding(
                        "K001",
                        f"catalogue example {' '.join(case['argv'])!r}: {problem}",
                        doc.location(("tests", i)),
                    )
                )
    return found


def _example_problem(case: Mapping[str, Any], catalogue: Catalogue) -> str:
    parsed = parse_command(list(case["argv"]), catalogue)
    if case.get("opaque", False):
        return "" if parsed.opaque else "parses, but must be opaque"
    if parsed.opaque:
        return f"must parse, but is opaque: {parsed.opaque}"
    call = parsed.calls[0]
    for key, paths in (("reads", call.reads), ("writes", call.writes)):
        if key in case:
            expected = sorted(resolve(p).shown for p in case[key])
            got = sorted(p.shown for p in paths)
            if expected != got:
                return f"{key} {got}, expected {expected}"
    for key in ("executes", "network"):
        if key in case and (key in call.effects) != case[key]:
            return f"{key} is {key in call.effects}, expected {case[key]}"
    return ""


def _conjuncts(cond: dict[str, Any]) -> frozenset[str] | None:
    """The leaves of a condition that is a leaf or an `all` of leaves (what
    the subsumption check can reason about exactly), else None."""
    leaves = cond.get("all", [cond])
    if any(k in leaf for leaf in leaves for k in ("all", "any", "not")):
        return None
    return frozenset(json.dumps(leaf, sort_keys=True) for leaf in leaves)


def _overridden(rules: Sequence[Rule]) -> list[Finding]:
    """Rules whose decision can never stand: a stricter rule's condition holds whenever theirs
    does (the same leaves, or a subset of them). Each stricter rule is indexed by its rarest leaf,
    so a rule is compared only with those that could be a subset of it."""
    shapes = [(r, r.decision, _conjuncts(r.when)) for r in rules if r.decision]
    frequency: Counter[str] = Counter(leaf for _, _, c in shapes if c for leaf in c)
    index: dict[str, list[tuple[Rule, str, frozenset[str]]]] = {}
    for rule, decision, leaves in shapes:
        if leaves and decision:
            index.setdefault(min(leaves, key=lambda x: (frequency[x], x)), []).append(
                (rule, decision, leaves)
            )
    found: list[Finding] = []
    for rule, decision, mine in shapes:
        if not mine or not decision:
            continue
        candidates = (c for leaf in mine for c in index.get(leaf, ()))
        for other, stricter, theirs in candidates:
            if other is rule or other.id in rule.overrides or not theirs <= mine:
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
