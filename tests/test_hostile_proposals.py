"""The hostile-proposal corpus (issue 9) against the bundled policies.

Hundreds of proposals, grouped by what they attack, live in
tests/hostile_proposals.yaml under three expectations:

- must_deny: destruction and privilege however spelled or wrapped, and shell
  syntax the parser must refuse. "Opaque means deny": a command the parser
  cannot see through is denied, never escalated.
- must_not_approve: exfiltration, reading outside the work dir, network,
  unknown programs, write-capable options, other tools misused. Escalate or
  deny.
- must_approve: ordinary read-only work on the work dir.

Every proposal is also checked against the proposal schema first, so that a
deny means the policy judged it, not that it was malformed.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy

CORPUS = Path(__file__).with_name("hostile_proposals.yaml")

#: What each class accepts.
EXPECTED: Mapping[str, frozenset[str]] = {
    "must_deny": frozenset({"deny"}),
    "must_not_approve": frozenset({"escalate", "deny"}),
    "must_approve": frozenset({"approve"}),
}
DECISIONS = frozenset({"approve", "escalate", "deny"})
DEFAULTS: Mapping[str, str] = {"tool": "shell", "action_type": "analysis", "risk": "low"}
ACTION_TYPES = frozenset(
    {"analysis", "optimization_experiment", "generate_new_nodes", "process_chunk"}
)
RISKS = frozenset({"none", "low"})
PROPOSAL_KEYS = frozenset({"tool", "action_type", "risk", "command", "args"})
#: The bar of the issue: several hundred hostile proposals.
MIN_CASES = 250


@dataclass(frozen=True)
class Case:
    expectation: str
    group: str
    attack: str
    proposal: Mapping[str, Any]
    note: str | None
    id: str


#: How invisible characters are shown in ids and messages (a backslash stays a backslash).
_NAMED = {"\n": "<LF>", "\r": "<CR>", "\t": "<TAB>", "\0": "<NUL>", "\v": "<VT>", "\f": "<FF>"}


def _visible(text: str) -> str:
    """`text` with control and other invisible characters named, so an id or a
    message shows what the command really holds (`ls<U+00A0>src`, `ls<LF>rm`)."""
    out = []
    for ch in text:
        if ch == " " or (ch.isprintable() and not unicodedata.category(ch).startswith("Z")):
            out.append(ch)
        else:
            out.append(_NAMED.get(ch, f"<U+{ord(ch):04X}>"))
    return "".join(out)


def _shown(proposal: Mapping[str, Any]) -> str:
    parts = []
    if proposal["tool"] != DEFAULTS["tool"]:
        parts.append(proposal["tool"])
    if "command" in proposal:
        command = proposal["command"]
        text = command if isinstance(command, str) else json.dumps(command, ensure_ascii=False)
        parts.append(text if proposal["tool"] == DEFAULTS["tool"] else f"command={text}")
    if "args" in proposal:
        parts.append("args=" + json.dumps(proposal["args"], ensure_ascii=False, sort_keys=True))
    shown = _visible(" ".join(parts))
    if len(shown) > 100:
        shown = shown[:97] + "..."
    extras = [f"{k}={proposal[k]}" for k in ("action_type", "risk") if proposal[k] != DEFAULTS[k]]
    return f"{shown} ({', '.join(extras)})" if extras else shown


def _proposal(raw: Any, defaults: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    if isinstance(raw, (str, list)):
        return {**defaults, "command": raw}, None
    if not isinstance(raw, dict):
        raise TypeError(f"a case is a command string, an argv list or a mapping, not {raw!r}")
    fields = dict(raw)
    note = fields.pop("note", None)
    unknown = set(fields) - PROPOSAL_KEYS
    if unknown:
        raise ValueError(f"unknown case keys {sorted(unknown)} in {raw!r}")
    return {**defaults, **fields}, note


def load_corpus(path: Path = CORPUS) -> list[Case]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if set(data) != set(EXPECTED):
        raise ValueError(f"{path}: the classes are {sorted(EXPECTED)}, not {sorted(data)}")
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for expectation, groups in data.items():
        for group in groups:
            defaults = {**DEFAULTS, **group.get("defaults", {})}
            for raw in group["cases"]:
                proposal, note = _proposal(raw, defaults)
                base = f"{group['group']}: {_shown(proposal)}"
                seen[base] = seen.get(base, 0) + 1
                case_id = base if seen[base] == 1 else f"{base} #{seen[base]}"
                cases.append(
                    Case(expectation, group["group"], group["attack"], proposal, note, case_id)
                )
    return cases


CASES = load_corpus()


def _params(expectation: str) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if c.expectation == expectation]


@cache
def _proposal_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        resources.files("janus_policy.schemas").joinpath("proposal.schema.json").read_text()
    )
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _schema_errors(proposal: Mapping[str, Any]) -> list[str]:
    return [e.message for e in _proposal_validator().iter_errors(dict(proposal))]


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(BUNDLED_POLICIES))
    try:
        yield e
    finally:
        e.close()


def _explain(case: Case, decision: Any) -> str:
    lines = [
        f"{case.expectation} / {case.group}: {case.attack}",
        f"proposal: {_visible(json.dumps(case.proposal, ensure_ascii=False))}",
    ]
    if case.note:
        lines.append(f"note: {case.note}")
    lines.append(
        f"decision: {decision.decision} (wanted {' or '.join(sorted(EXPECTED[case.expectation]))})"
    )
    lines.append("reasons:")
    lines.extend(f"  - {r}" for r in decision.reasons)
    if not decision.reasons:
        lines.append("  (none given)")
    return "\n".join(lines)


def _judge(engine: PolicyEngine, case: Case) -> None:
    problems = _schema_errors(case.proposal)
    assert not problems, (
        f"the proposal itself is invalid, so a decision on it proves nothing: {problems}\n"
        f"proposal: {_visible(json.dumps(case.proposal, ensure_ascii=False))}"
    )
    decision = engine.evaluate(case.proposal)
    well_formed = decision.decision in DECISIONS and all(
        isinstance(r, str) for r in decision.reasons
    )
    assert well_formed, _explain(case, decision)
    expected = decision.decision in EXPECTED[case.expectation]
    assert expected, _explain(case, decision)


@pytest.mark.parametrize("case", _params("must_deny"))
def test_must_deny(engine: PolicyEngine, case: Case) -> None:
    _judge(engine, case)


@pytest.mark.parametrize("case", _params("must_not_approve"))
def test_must_not_approve(engine: PolicyEngine, case: Case) -> None:
    _judge(engine, case)


@pytest.mark.parametrize("case", _params("must_approve"))
def test_must_approve(engine: PolicyEngine, case: Case) -> None:
    _judge(engine, case)


def test_the_corpus_is_large_and_well_formed() -> None:
    hostile = [c for c in CASES if c.expectation != "must_approve"]
    assert len(hostile) >= MIN_CASES, f"only {len(hostile)} hostile proposals"
    by_key: dict[str, list[str]] = {}
    for c in CASES:
        by_key.setdefault(json.dumps(c.proposal, sort_keys=True), []).append(c.id)
    duplicates = {k: ids for k, ids in by_key.items() if len(ids) > 1}
    assert not duplicates, f"proposals listed more than once: {list(duplicates.values())}"
    for c in CASES:
        assert set(c.proposal) >= set(DEFAULTS), c.id
        assert set(c.proposal) <= PROPOSAL_KEYS, c.id
        assert c.proposal["action_type"] in ACTION_TYPES, c.id
        assert c.proposal["risk"] in RISKS, c.id
        assert c.attack.strip(), c.id
        assert not _schema_errors(c.proposal), (c.id, _schema_errors(c.proposal))
    for expectation in EXPECTED:
        assert any(c.expectation == expectation for c in CASES), expectation
