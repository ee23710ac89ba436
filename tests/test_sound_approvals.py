"""An approve is sound on its own: random argvs over the whole catalogue, with options spelled
every way getopt accepts, never get `approve` from the bundled policies for an option that
writes, runs code or reads outside the work dir; and the checks around a decision (its time
budget, `check --config`) fail closed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from janus_policy.policy.catalogue import OptionSpec, ProgramSpec, bundled_catalogue
from janus_policy.policy.evaluate import PolicyEngine, Settings
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy

CATALOGUE = bundled_catalogue()
#: Programs whose argv the catalogue parses (the others are never approved: test_hostile_*).
PARSED = sorted(
    name
    for name, spec in CATALOGUE.programs.items()
    if spec.syntax in ("gnu", "posix", "none", "echo") and not spec.builtin
)
INSIDE = ["data.csv", "src", "./notes.txt", "a/b", "."]
OUTSIDE = ["/etc/passwd", "../x", "/root/a", "//etc/x", "src/../../y", "/home/u/f"]
#: Option kinds that must never be auto-approved, whatever their value.
UNSAFE_KINDS = frozenset({"write", "exec", "readlist"})
PATH_KINDS = frozenset({"read", "cwd"})


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(BUNDLED_POLICIES))
    yield e
    e.close()


def spellings(option: OptionSpec, spec: ProgramSpec) -> list[str]:
    """Every way to write the option's name: its short and long names, and every unambiguous
    abbreviation of a long one."""
    out = []
    for name in option.names:
        out.append(name)
        if name.startswith("--"):
            for end in range(3, len(name)):
                prefix = name[2:end]
                owners = {id(o) for n, o in spec.long.items() if n.startswith(prefix)}
                if owners == {id(option)}:
                    out.append("--" + prefix)
    return out


@st.composite
def argvs(draw: st.DrawFn) -> tuple[list[str], list[tuple[OptionSpec, str | None]]]:
    """A random argv of a parsed program, and the options (with values) it was given."""
    name = draw(st.sampled_from(PARSED))
    spec = CATALOGUE.programs[name]
    argv = [name]
    given_options: list[tuple[OptionSpec, str | None]] = []
    options = [o for o in spec.options if o.value != "command"]
    for _ in range(draw(st.integers(0, 3))):
        if not options:
            break
        option = draw(st.sampled_from(options))
        spelled = draw(st.sampled_from(spellings(option, spec)))
        value: str | None = None
        if option.value is not None:
            value = draw(
                st.sampled_from(sorted(option.values))
                if option.values
                else st.sampled_from(INSIDE + OUTSIDE + ["5", "x"])
            )
        if value is None:
            argv.append(spelled)
        elif option.optional or draw(st.booleans()):
            argv.append(f"{spelled}={value}" if spelled.startswith("--") else spelled + value)
        else:
            argv += [spelled, value]
        given_options.append((option, value))
    argv += draw(st.lists(st.sampled_from(INSIDE), max_size=3))
    return argv, given_options


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argvs())
def test_random_argvs_never_approve_an_unsafe_option(
    engine: PolicyEngine, drawn: tuple[list[str], list[tuple[OptionSpec, str | None]]]
) -> None:
    argv, given_options = drawn
    proposal: dict[str, Any] = {
        "tool": "shell",
        "action_type": "analysis",
        "risk": "low",
        "command": argv,
    }
    decision = engine.evaluate(proposal)
    if decision.decision != "approve":
        return
    for option, value in given_options:
        assert option.value not in UNSAFE_KINDS, (argv, option.names, decision.reasons)
        assert not option.effects & {"writes", "executes", "network"}, (argv, option.names)
        if option.value in PATH_KINDS:
            assert value not in OUTSIDE, (argv, option.names, decision.reasons)


def test_a_decision_over_its_time_budget_is_deny() -> None:
    engine = PolicyEngine(load_policy(BUNDLED_POLICIES), Settings(budget_s=0.0))
    try:
        d = engine.evaluate(
            {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls"}
        )
    finally:
        engine.close()
    assert d.decision == "deny"
    assert d.error is not None
    assert "time budget" in d.error


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "janus_policy", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_with_a_config_warns_about_tools_and_automation(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "p.yaml").write_text(
        textwrap.dedent(
            """\
            ruleset: p
            rules:
              - id: approve-nodes
                when: {field: tool, equals: node_generator}
                decision: approve
              - id: approve-printer
                when: {field: tool, equals: printer}
                decision: approve
              - id: approve-by-name
                when: {command: {names: [cat]}}
                decision: approve
              - id: approve-unknown-program
                when: {command: {programs: [make-coffee]}}
                decision: approve
              - id: deny-keys-here-only
                when: {command: {touches: ["**/.ssh/**"]}}
                decision: deny
            """
        )
    )
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"policy_dir: {policy}\n"
        "tools:\n  fetch:\n    command: [/usr/bin/true, '{url}']\n    read_only: true\n"
    )
    done = check("--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr  # warnings only
    lines = done.stdout.splitlines()

    def warned(code: str, *words: str) -> bool:
        return any(code in line and all(w in line for w in words) for line in lines)

    assert warned("W208", "'node_generator'", "not read-only")
    assert warned("W208", "'printer'", "not a configured tool")
    assert warned("W204", "approve-by-name")
    assert warned("W205", "make-coffee")
    assert warned("W206", "'/**/.ssh/**'")
    assert warned("W207", "'fetch'", str(config))
    assert check("--config", str(config), "--strict").returncode == 1
    assert check("--config", str(tmp_path / "missing.yaml")).returncode == 2


@pytest.mark.parametrize(
    ("command", "decision"),
    [
        ("cat " + " ".join(f"f{i}" for i in range(10_000)), "approve"),  # a long plain line
        (["cat", *(f"f{i}" for i in range(4_000))], "approve"),  # the largest argv
        ("cat " + "a/" * 2_000 + "x", "approve"),  # a deep path
        ("cat " + "/**" * 3_000, "deny"),  # glob characters: opaque
        ("ls; " * 200 + "ls", "approve"),  # many commands, under the bound
        ("ls; " * 300 + "ls", "deny"),  # over it: opaque
        ("sh -c " + "'sh -c " * 3 + "ls" + "'" * 3, "deny"),  # quotes that do not nest: opaque
    ],
)
def test_the_largest_deepest_inputs_get_a_decision(
    engine: PolicyEngine, command: str | list[str], decision: str
) -> None:
    d = engine.evaluate(
        {"tool": "shell", "action_type": "analysis", "risk": "low", "command": command}
    )
    assert d.decision == decision, d.reasons
