"""Exceptions (`overrides`): an approving rule that carves what it matches out of escalate
rules, of its own rule set or another. Where it matches, the rules it overrides take no part
(neither their decision nor their risk); deny rules cannot be overridden; `check` lists every
exception."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from janus_policy.cli import main
from janus_policy.policy.evaluate import Decision, PolicyEngine
from janus_policy.policy.lint import lint
from janus_policy.policy.load import BUNDLED_POLICIES, PolicyError, load_policy

#: A rule set of its own: read-only commands are approved, version control escalates (with a
#: raised risk and its own reviewers), rm is denied.
BASE = """\
    ruleset: base
    rules:
      - id: approve-read-only
        when:
          all:
            - {field: tool, equals: shell}
            - command: {known: true, reads: ["**"], writes: none, executes: false, network: false}
        decision: approve
      - id: escalate-git
        when: {command: {programs: [git]}}
        decision: escalate
        classify_risk: medium
        escalation: {approvers: vcs-reviewers}
      - id: deny-rm
        when: {command: {names: [rm]}}
        decision: deny
    """
#: Another rule set, carving git status (and git commit) out of escalate-git.
LOCAL = """\
    ruleset: local
    rules:
      - id: approve-git-status
        when: {command: {programs: [git], subcommands: [status]}}
        decision: approve
        overrides: [escalate-git]
      - id: approve-git-commit
        when: {command: {programs: [git], subcommands: [commit]}}
        decision: approve
        overrides: [escalate-git]
    """


def policy(root: Path, **files: str) -> Path:
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(policy(tmp_path / "p", base=BASE, local=LOCAL)))
    yield e
    e.close()


def shell(engine: PolicyEngine, command: str, **extra: Any) -> Decision:
    d = engine.evaluate(
        {"tool": "shell", "action_type": "analysis", "risk": "low", "command": command}, **extra
    )
    assert d.error is None, d.error
    return d


EXCEPTION = "approve-git-status overrides escalate-git here (an exception)"


def test_without_the_exception_git_status_escalates(tmp_path: Path) -> None:
    e = PolicyEngine(load_policy(policy(tmp_path / "p", base=BASE)))
    try:
        d = shell(e, "git status")
        assert (d.decision, d.effective_risk) == ("escalate", "medium")
        assert d.matched_ids[0] == "escalate-git"
    finally:
        e.close()


def test_an_exception_approves_git_status_out_of_another_rule_sets_escalation(
    engine: PolicyEngine,
) -> None:
    d = shell(engine, "git status")
    assert d.decision == "approve"
    # Neither the overridden rule's decision nor its risk takes part.
    assert d.effective_risk == "low"
    assert "escalate-git" not in d.matched_ids
    assert set(d.matched_ids) == {"approve-read-only", "approve-git-status"}
    assert d.escalation is None
    assert d.reasons[-1] == EXCEPTION
    assert d.limits  # an approval carries its limits


def test_an_exception_holds_only_where_it_matches(engine: PolicyEngine) -> None:
    log = shell(engine, "git log")
    assert (log.decision, log.effective_risk) == ("escalate", "medium")
    assert log.escalation is not None
    assert log.escalation["approvers"] == "vcs-reviewers"
    assert not any("an exception" in r for r in log.reasons)
    # Per program: git log keeps its escalation beside an excepted git status.
    both = shell(engine, "git status; git log")
    assert (both.decision, both.effective_risk) == ("escalate", "medium")
    assert both.matched_ids[0] == "escalate-git"
    assert EXCEPTION in both.reasons


def test_an_exception_does_not_touch_a_deny(engine: PolicyEngine) -> None:
    d = shell(engine, "git status; rm x")
    assert d.decision == "deny"
    assert d.matched_ids[0] == "deny-rm"


def test_an_exception_does_not_lift_the_rules_of_the_mode(engine: PolicyEngine) -> None:
    # Mode alpha: every approval is a human's.
    assert shell(engine, "git status", mode="alpha").decision == "escalate"
    # Mode beta: what is not read-only still needs a human, exception or not.
    d = shell(engine, "git commit -m wip")
    assert d.decision == "escalate"
    assert "escalate-git" not in d.matched_ids
    assert "approve-git-commit overrides escalate-git here (an exception)" in d.reasons
    assert "auto-execution needs an action that is read-only" in d.reasons[-1]


def test_an_exception_to_a_bundled_rule(tmp_path: Path) -> None:
    # An operator's copy of the bundled rule sets, with an exception of their own.
    copy = tmp_path / "p"
    shutil.copytree(BUNDLED_POLICIES, copy)
    policy(
        copy,
        local="""\
        ruleset: local
        rules:
          - id: approve-git-status
            when:
              all:
                - {field: tool, equals: shell}
                - command: {programs: [git], subcommands: [status]}
            decision: approve
            overrides: [escalate-version-control]
        """,
    )
    e = PolicyEngine(load_policy(copy))
    try:
        d = shell(e, "git status")
        assert "escalate-version-control" not in d.matched_ids
        assert "approve-git-status" in d.matched_ids
        assert "approve-git-status overrides escalate-version-control here (an exception)" in (
            d.reasons
        )
        # Elsewhere the bundled rule still escalates.
        log = shell(e, "git log")
        assert log.decision == "escalate"
        assert "escalate-version-control" in log.matched_ids
    finally:
        e.close()


# ---- what may be an exception: P107 ----


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "decision: approve\n    overrides: [deny-rm]",
            "rule 'x' overrides 'deny-rm', which decides deny: only escalate rules can be "
            "overridden (deny stays absolute)",
        ),
        (
            "decision: approve\n    overrides: [approve-read-only]",
            "rule 'x' overrides 'approve-read-only', which decides approve: only escalate rules",
        ),
        (
            "decision: approve\n    overrides: [escalate-gti]",
            "rule 'x' overrides 'escalate-gti', which is no rule (did you mean 'escalate-git'?)",
        ),
        (
            "decision: escalate\n    overrides: [escalate-git]",
            "rule 'x': only an approving rule may override",
        ),
        (
            "classify_risk: low\n    overrides: [escalate-git]",
            "rule 'x': only an approving rule may override",
        ),
    ],
)
def test_a_bad_exception_is_a_located_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, message: str
) -> None:
    # The rule's when is on line 4, its decision (or risk) on 5, its overrides on 6.
    d = policy(
        tmp_path / "p",
        base=BASE,
        local=f"ruleset: local\nrules:\n  - id: x\n    when: {{field: tool, equals: shell}}\n"
        f"    {rule}\n",
    )
    with pytest.raises(PolicyError) as e:
        load_policy(d)
    (found,) = e.value.findings
    assert found.code == "P107"
    assert str(found).startswith(f"{d / 'local.yaml'}:6:5: P107 {message}")
    assert main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"local.yaml:6:5: P107 {message}" in out


def test_a_deny_cannot_be_overridden_even_beside_an_escalate(tmp_path: Path) -> None:
    local = LOCAL.replace(
        "overrides: [escalate-git]\n      - id: approve-git-commit",
        "overrides: [escalate-git, deny-rm]\n      - id: approve-git-commit",
    )
    with pytest.raises(PolicyError) as e:
        load_policy(policy(tmp_path / "p", base=BASE, local=local))
    (found,) = e.value.findings  # escalate-git is fine; deny-rm is not
    assert found.code == "P107"
    assert "overrides 'deny-rm', which decides deny" in found.message


# ---- check lists every exception: W210 ----


def test_check_lists_every_exception(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = policy(tmp_path / "p", base=BASE, local=LOCAL)
    found = [f for f in lint(d) if f.code == "W210"]
    assert [(f.severity, f.error.location and f.error.location.line) for f in found] == [
        ("warning", 3),
        ("warning", 7),
    ]
    assert main(["check", str(d)]) == 0  # a warning: the policy is fine
    out = capsys.readouterr().out
    assert (
        f"{d / 'local.yaml'}:3:5: W210 warning: rule 'approve-git-status' is an exception to "
        "'escalate-git': where it matches, 'escalate-git' takes no part"
    ) in out
    assert "local.yaml:7:5: W210 warning: rule 'approve-git-commit' is an exception to" in out
    assert "Found 0 error(s) and 2 warning(s)." in out
    assert main(["check", "--strict", str(d)]) == 1
    capsys.readouterr()
    assert main(["check", "--format", "json", str(d)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(f["code"], f["severity"]) for f in data["findings"]] == [("W210", "warning")] * 2


def test_one_finding_per_overridden_rule(tmp_path: Path) -> None:
    base = textwrap.dedent(BASE) + (
        "  - id: escalate-network\n    when: {command: {network: true}}\n    decision: escalate\n"
    )
    both = "overrides: [escalate-git, escalate-network]"
    local = LOCAL.replace("overrides: [escalate-git]", both, 1)  # on approve-git-status only
    d = policy(tmp_path / "p", base=base, local=local)
    messages = [f.error.message for f in lint(d) if f.code == "W210"]
    assert len(messages) == 3
    assert any("'approve-git-status' is an exception to 'escalate-network'" in m for m in messages)


def test_an_exception_narrower_than_the_rule_it_overrides_is_not_shadowed(tmp_path: Path) -> None:
    d = policy(
        tmp_path / "p",
        base="""\
        ruleset: base
        rules:
          - id: escalate-git
            when: {command: {programs: [git]}}
            decision: escalate
        """,
        local="""\
        ruleset: local
        rules:
          - id: approve-git-status
            when:
              all:
                - {command: {programs: [git]}}
                - {command: {subcommands: [status]}}
            decision: approve
            overrides: [escalate-git]
        tests:
          - name: git status is approved by the exception
            proposal: {tool: shell, action_type: analysis, risk: low, command: git status}
            expect: approve
        """,
    )
    # The inline test passes: the exception does decide.
    assert [f.code for f in lint(d)] == ["W210"]
