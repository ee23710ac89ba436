"""What evaluation does per decision to be fast gives the same answers as the slow way: the
compiled proposal check agrees with the JSON Schema validator, indexed field and command tests
agree with their definitions, and atom values in bytes are checked as strictly as by name."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from janus_policy import documents
from janus_policy.policy.backend import (
    Atom,
    AtomValues,
    BackendError,
    DurableBackend,
    EngineRule,
    Not,
)
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import load_policy

# ---- the proposal check ----

# Near the schema's edges: patterns and their final newline, lengths, types JSON has not.
TEXT = st.one_of(
    st.sampled_from(["shell", "shell\n", "Shell", "", "a" * 64, "a" * 65, "m-1.x", "x\ny"]),
    st.text(max_size=10),
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(TEXT, inner, max_size=3),
    ),
    max_leaves=8,
)
NAMES = st.sampled_from(["shell", "analysis", "llama-cli", "a" * 64, "shell\n", "Shell", ""])
COMMANDS = st.one_of(
    TEXT, st.lists(TEXT, max_size=3), st.lists(TEXT, max_size=3).map(tuple), JSONISH
)
PROPOSALS = st.fixed_dictionaries(
    {
        "tool": st.one_of(NAMES, NAMES, JSONISH),
        "action_type": NAMES,
        "risk": st.sampled_from(["low", "critical", "lowish", "low\n"]),
    },
    optional={
        "command": COMMANDS,
        "args": JSONISH,
        "mission": st.one_of(NAMES, TEXT),
        "rationale": st.one_of(TEXT, st.just("r" * 4001)),
        "extra": JSONISH,
    },
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(PROPOSALS, JSONISH))
def test_the_compiled_proposal_check_agrees_with_the_validator(data: Any) -> None:
    assert documents.is_valid("proposal", data) == documents.validator("proposal").is_valid(data)


CYCLE: list[Any] = []
CYCLE.append(CYCLE)


@pytest.mark.parametrize(
    ("proposal", "valid"),
    [
        ({"tool": "shell", "action_type": "analysis", "risk": "low", "command": ["ls"]}, True),
        # Python's `$` matches before a final newline: the schema's validator says valid.
        ({"tool": "shell\n", "action_type": "analysis", "risk": "low"}, True),
        ({"tool": "shell", "action_type": "analysis", "risk": "low", "command": ("ls",)}, False),
        ({"tool": "shell", "action_type": "analysis", "risk": "low", 1: "x"}, False),
        # Not JSON, but only `args`' type is checked: not walked forever.
        ({"tool": "shell", "action_type": "analysis", "risk": "low", "args": {"c": CYCLE}}, True),
    ],
)
def test_the_proposal_checks_edges(proposal: dict[Any, Any], valid: bool) -> None:
    assert documents.validator("proposal").is_valid(proposal) is valid
    assert documents.is_valid("proposal", proposal) is valid


# ---- indexed atoms ----


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """\
            ruleset: p
            rules:
              - {id: int-1, when: {field: args.v, equals: 1}, decision: deny}
              - {id: float-1, when: {field: args.v, equals: 1.0}, decision: deny}
              - {id: is-true, when: {field: args.v, equals: true}, decision: deny}
              - {id: str-1, when: {field: args.v, equals: "1"}, decision: deny}
              - {id: in-int-str, when: {field: args.v, in: [1, "1"]}, decision: deny}
              - {id: in-false, when: {field: args.v, in: [false, false]}, decision: deny}
              - {id: not-in-1, when: {field: args.v, not_in: [1]}, decision: deny}
              - {id: sudo, when: {command: {argv: [[sudo, doas]]}}, decision: deny}
              - {id: any-then-rm, when: {command: {argv: ["*", rm]}}, decision: deny}
              - id: cat-etc
                when: {command: {argv: [cat], any_path: ["/etc/*", "x?"]}}
                decision: deny
              - {id: no-ls, when: {not: {command: {argv: [ls]}}}, decision: deny}
            """
        )
    )
    return tmp_path


@pytest.fixture
def engine(policy_dir: Path) -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(policy_dir))
    yield e
    e.close()


def matched(engine: PolicyEngine, **fields: Any) -> set[str]:
    d = engine.evaluate({"tool": "shell", "action_type": "analysis", "risk": "low", **fields})
    assert d.error is None, d.error
    return set(d.matched_ids)


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (1, {"int-1", "in-int-str"}),
        (1.0, {"float-1", "not-in-1"}),
        (True, {"is-true", "not-in-1"}),
        ("1", {"str-1", "in-int-str", "not-in-1"}),
        (False, {"in-false", "not-in-1"}),
        (0, {"not-in-1"}),
        ([1], {"not-in-1"}),
    ],
)
def test_equality_compares_type_and_value(engine: PolicyEngine, value: Any, ids: set[str]) -> None:
    assert matched(engine, args={"v": value}) == {*ids, "no-ls"}


def test_an_absent_field_equals_nothing(engine: PolicyEngine) -> None:
    assert matched(engine) == {"no-ls"}


@pytest.mark.parametrize(
    ("command", "ids"),
    [
        (["sudo", "ls"], {"sudo", "no-ls"}),
        (["/usr/bin/doas", "ls"], {"sudo", "no-ls"}),
        (["xsudo"], {"no-ls"}),
        (["nice-sudo", "rm"], {"any-then-rm", "no-ls"}),
        (["/bin/cat", "/etc/../etc/passwd"], {"cat-etc", "no-ls"}),
        (["cat", "xy"], {"cat-etc", "no-ls"}),
        (["cat", "/etc/a/b", "x/y", "x..", "-x"], {"no-ls"}),
        (["/bin/ls", "-l"], set()),
    ],
)
def test_commands_match_by_program_or_its_basename(
    engine: PolicyEngine, command: list[str], ids: set[str]
) -> None:
    assert matched(engine, command=command) == ids


# ---- atom values in bytes ----


@pytest.fixture
def backend() -> Iterator[DurableBackend]:
    b = DurableBackend([EngineRule("x", Atom("x")), EngineRule("not-x", Not(Atom("x")))])
    yield b
    b.close()


def test_atom_values_by_position(backend: DurableBackend) -> None:
    names = ("y", "x")
    assert backend.matching(AtomValues(names, b"\0\1")) == ["x"]
    assert backend.matching(AtomValues(names, b"\1\0")) == ["not-x"]
    assert dict(AtomValues(names, b"\1\0")) == {"y": True, "x": False}


@pytest.mark.parametrize(
    ("names", "bits", "error"),
    [
        ((), b"", "without a value: \\['x'\\]"),  # the empty tuple is one object: no shortcut
        (("y",), b"\0", "without a value"),
        (("x", "x"), b"\0\1", "distinct"),
        (["x"], b"\1", "tuple"),
        (("x",), b"\2", "0 or 1"),
        (("x",), b"", "0 or 1"),
        (("x",), b"\0\0", "0 or 1"),
        (("x",), bytearray(b"\1"), "0 or 1"),
    ],
)
def test_bad_atom_values_in_bytes_raise(
    backend: DurableBackend, names: tuple[str, ...], bits: bytes, error: str
) -> None:
    assert backend.matching(AtomValues(("x",), b"\1")) == ["x"]  # a checked tuple in place
    with pytest.raises(BackendError, match=error):
        backend.matching(AtomValues(names, bits))
