"""What evaluation does per decision to be fast gives the same answers as the slow way: the
compiled proposal check agrees with the JSON Schema validator, indexed field and command tests
agree with their definitions, and atom values in bytes are checked as strictly as by name."""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
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
from janus_policy.policy.catalogue import Catalogue, bundled_catalogue
from janus_policy.policy.command import parse_command
from janus_policy.policy.compile import command_predicate, field_predicate, lookup
from janus_policy.policy.evaluate import Decision, PolicyEngine, _args_call
from janus_policy.policy.load import load_policy
from janus_policy.policy.tool_specs import BUILTIN_TOOLS

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

# Every command atom that names a program is indexed by the names it allows (`programs`,
# `names`, the first token of `argv`), the rest run on every fact; `equals` and `in` are looked
# up by the field's value. `show` is the policy's own program, trusted at a path whose basename
# is another name: only the call's program finds it in the index.
POLICY = """\
ruleset: p
rules:
  - {id: int-1, when: {field: args.v, equals: 1}, decision: deny}
  - {id: float-1, when: {field: args.v, equals: 1.0}, decision: deny}
  - {id: is-true, when: {field: args.v, equals: true}, decision: deny}
  - {id: str-1, when: {field: args.v, equals: "1"}, decision: deny}
  - {id: in-int-str, when: {field: args.v, in: [1, "1"]}, decision: deny}
  - {id: in-false, when: {field: args.v, in: [false, false]}, decision: deny}
  - {id: not-in-1, when: {field: args.v, not_in: [1]}, decision: deny}
  - {id: sudo, when: {command: {names: [sudo, doas]}}, decision: deny}
  - {id: named-cat, when: {command: {names: [cat]}}, decision: deny}
  - {id: cat, when: {command: {programs: [/usr/bin/cat]}}, decision: deny}
  - {id: frob, when: {command: {programs: [frob]}}, decision: deny}
  - {id: show, when: {command: {programs: [show]}}, decision: deny}
  - {id: any-then-rm, when: {command: {argv: ["*", rm]}}, decision: deny}
  - {id: timeout-rm, when: {command: {argv: [[timeout, /usr/bin/nice], "*", rm]}}, decision: deny}
  - {id: reads-etc, when: {command: {reads_any: ["/etc/*"]}}, decision: deny}
  - {id: writes-etc, when: {command: {writes_any: ["/etc/**"]}}, decision: deny}
  - {id: touches-etc, when: {command: {touches: ["/etc/**"]}}, decision: deny}
  - {id: git-status, when: {command: {programs: [git], subcommands: [status]}}, decision: deny}
  - {id: rm-r, when: {command: {programs: [rm], options: [-r]}}, decision: deny}
  - {id: no-ls, when: {not: {command: {programs: [ls]}}}, decision: deny}
"""
OWN_CATALOGUE = """\
catalogue: own
programs:
  show:
    paths: [/usr/local/bin/show-file]
    syntax: gnu
    operands: [{kind: read, count: "*"}]
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyEngine]:
    policy_dir = tmp_path_factory.mktemp("policy")
    (policy_dir / "p.yaml").write_text(POLICY)
    (policy_dir / "catalogue").mkdir()
    (policy_dir / "catalogue" / "own.yaml").write_text(OWN_CATALOGUE)
    e = PolicyEngine(load_policy(policy_dir))
    yield e
    e.close()


def decide(engine: PolicyEngine, tool: str, **fields: Any) -> Decision:
    d = engine.evaluate({"tool": tool, "action_type": "analysis", "risk": "low", **fields})
    assert d.error is None, d.error
    return d


def matched(engine: PolicyEngine, tool: str, **fields: Any) -> set[str]:
    return set(decide(engine, tool, **fields).matched_ids)


# A tool without a spec: its proposal reaches the rules as it is, with no call.
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
    assert matched(engine, "custom", args={"v": value}) == {*ids, "no-ls"}


def test_an_absent_field_equals_nothing(engine: PolicyEngine) -> None:
    assert matched(engine, "custom") == {"no-ls"}


R = {"rm-r", "no-ls"}
CAT_ETC = {"cat", "named-cat", "reads-etc", "touches-etc", "no-ls"}


@pytest.mark.parametrize(
    ("command", "ids"),
    [
        # programs: the bare name or a trusted path, whichever a rule names; names: any path
        (["cat", "x"], {"cat", "named-cat", "no-ls"}),
        (["/bin/cat", "x"], {"cat", "named-cat", "no-ls"}),
        (["/usr/bin/cat", "x"], {"cat", "named-cat", "no-ls"}),
        (["./cat", "x"], {"named-cat", "no-ls"}),
        (["/tmp/x/cat", "x"], {"named-cat", "no-ls"}),
        (["show", "x"], {"show", "no-ls"}),
        (["/usr/local/bin/show-file", "x"], {"show", "no-ls"}),
        (["/tmp/show", "x"], {"no-ls"}),
        (["frob", "x"], {"frob", "no-ls"}),  # not in the catalogue: by its bare name only
        (["/opt/frob", "x"], {"no-ls"}),
        (["sudo", "ls"], {"sudo", "no-ls"}),  # ls is sudo's word here, not a call
        (["/usr/bin/doas", "ls"], {"sudo", "no-ls"}),
        (["/tmp/x/sudo", "rm", "x"], {"sudo", "any-then-rm", "no-ls"}),
        (["xsudo"], {"no-ls"}),
        (["ls", "-l"], set()),
        (["/bin/ls", "-l"], set()),
        (["./ls", "-l"], {"no-ls"}),
        # paths, as the program reads them: a parsed program's are sure, even at another path
        (["cat", "../../etc/passwd"], CAT_ETC),
        (["/tmp/x/cat", "/etc/passwd"], {"named-cat", "reads-etc", "touches-etc", "no-ls"}),
        (["cat", "/etc/a/b", "etc/passwd"], {"cat", "named-cat", "touches-etc", "no-ls"}),
        (["rm", "/etc/x"], {"writes-etc", "touches-etc", "no-ls"}),
        (["./rm", "/etc/x"], {"writes-etc", "touches-etc", "no-ls"}),
        # guessed paths: every word of an unparsed argv is touched, none surely read or written
        (["python3", "/etc/shadow"], {"touches-etc", "no-ls"}),
        (["frob", "/etc/shadow"], {"frob", "touches-etc", "no-ls"}),
        (["sudo", "cat", "/etc/shadow"], {"sudo", "touches-etc", "no-ls"}),
        # wrappers: each program a call of its own, the decision on the union
        (["env", "-C", "/", "cat", "etc/shadow"], CAT_ETC),
        (["timeout", "5", "rm", "-rf", "x"], {"timeout-rm", *R}),
        # argv is a token prefix: here rm is nice's value, and x the program it runs
        (["/usr/bin/nice", "-n", "rm", "x"], {"timeout-rm", "no-ls"}),
        (["/bin/nice", "5", "rm"], {"timeout-rm", "any-then-rm", "no-ls"}),  # runs `5 rm`
        (["./nice", "5", "rm"], {"any-then-rm", "no-ls"}),
        # subcommands and options, however spelled
        (["git", "status"], {"git-status", "no-ls"}),
        (["git", "-C", "/", "status", "-s"], {"git-status", "no-ls"}),
        (["git", "log"], {"no-ls"}),
        (["rm", "-r", "x"], R),
        (["rm", "-R", "x"], R),
        (["rm", "-fr", "x"], R),
        (["rm", "--rec", "x"], R),
        (["/bin/rm", "--recursive", "x"], R),
        (["./rm", "-r", "x"], {"no-ls"}),
        (["rm", "-f", "x"], {"no-ls"}),
        (["rm", "--", "-r"], {"no-ls"}),
        ("rm -r x | cat", {"cat", "named-cat", *R}),
    ],
)
def test_commands_match_as_their_definitions_say(
    engine: PolicyEngine, command: list[str] | str, ids: set[str]
) -> None:
    assert matched(engine, "shell", command=command) == ids


@pytest.mark.parametrize("command", [["rm", "-q", "x"], ["cat", "-x"], ["./cat", "-x"]])
def test_an_unknown_option_is_opaque(engine: PolicyEngine, command: list[str]) -> None:
    d = decide(engine, "shell", command=command)
    assert (d.decision, d.matched_ids) == ("deny", ())
    assert "command cannot be judged" in d.reasons[0]


def test_a_tools_args_are_tested_as_a_call_without_a_program(engine: PolicyEngine) -> None:
    args = {"path": "/etc/passwd", "segment": 0}
    assert matched(engine, "file_chunker", args=args) == {"reads-etc", "touches-etc", "no-ls"}


# ---- indexed atoms agree with their definitions ----


def holds(cond: Mapping[str, Any], fact: Mapping[str, Any], catalogue: Catalogue) -> bool:
    """A rule's condition by its definition: no index, every leaf evaluated."""
    if "all" in cond:
        return all(holds(c, fact, catalogue) for c in cond["all"])
    if "any" in cond:
        return any(holds(c, fact, catalogue) for c in cond["any"])
    if "not" in cond:
        return not holds(cond["not"], fact, catalogue)
    if "command" in cond:
        return command_predicate(cond["command"], catalogue)(fact)
    if "equals" in cond or "in" in cond:
        value = lookup(fact, cond["field"].split("."))
        wanted = [cond["equals"]] if "equals" in cond else cond["in"]
        return any(type(value) is type(w) and value == w for w in wanted)
    return field_predicate(cond)(fact)


#: A program, by a name or a path, with the words it starts with.
PROGRAMS = st.sampled_from(
    [["cat"], ["/bin/cat"], ["/usr/bin/cat"], ["./cat"], ["/tmp/x/cat"], ["rm"], ["/usr/bin/rm"],
     ["./rm"], ["rm", "-r"], ["rm", "-fr"], ["/bin/rm", "--rec"], ["git", "status"],
     ["/usr/bin/git", "-C", "/", "status"], ["./git", "status"], ["git", "log"], ["ls"],
     ["/bin/ls"], ["./ls"], ["python3"], ["/usr/bin/python3"], ["frob"], ["/opt/frob"], ["show"],
     ["/usr/local/bin/show-file"], ["/tmp/show"], ["sudo"], ["/tmp/x/sudo"], ["doas"]]
)  # fmt: skip
PATHS = st.sampled_from(
    ["x", "src/a", ".", "etc/shadow", "../../etc/passwd", "/etc/shadow", "/etc", "/", "/tmp/y"]
)
WORDS = st.one_of(
    PATHS,
    st.sampled_from(["-r", "-R", "-fr", "-f", "--rec", "--recursive", "--force", "--", "-"]),
    st.sampled_from(["status", "log", "rm", "5", "-l", "-s", "-C", "-n", "-q"]),
)
#: Wrappers and what they take before the command they run.
WRAPPERS = st.sampled_from(
    [["env"], ["env", "-C", "/"], ["env", "-C", "etc"], ["timeout", "5"],
     ["/usr/bin/timeout", "5"], ["nice"], ["/usr/bin/nice"], ["sudo"]]
)  # fmt: skip
ARGVS = st.builds(
    lambda wrappers, program, words: [*(w for ws in wrappers for w in ws), *program, *words],
    st.one_of(st.just([]), st.lists(WRAPPERS, min_size=1, max_size=2)),
    PROGRAMS,
    st.lists(WORDS, max_size=4),
)
COMMAND = st.one_of(
    ARGVS,
    st.lists(ARGVS, min_size=1, max_size=3).map(lambda a: " | ".join(map(shlex.join, a))),
)


@pytest.fixture(scope="module")
def backend_of(engine: PolicyEngine) -> Iterator[DurableBackend]:
    b = DurableBackend(engine.compiled.rules)
    yield b
    b.close()


@settings(max_examples=800, deadline=None)
@given(command=COMMAND)
def test_indexed_command_atoms_agree_with_their_definitions(
    engine: PolicyEngine, backend_of: DurableBackend, command: list[str] | str
) -> None:
    proposal = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": command}
    catalogue = engine.policy.catalogue
    judged = parse_command(command, catalogue)
    union: set[str] = set()
    for call in judged.calls:
        fact = {**proposal, "call": call}
        expected = {r.id for r in engine.policy.rules if holds(r.when, fact, catalogue)}
        assert set(backend_of.matching(engine.compiled.atom_values(fact))) == expected, call
        union |= expected
    d = engine.evaluate(proposal)
    assert d.error is None, d.error
    if judged.opaque is not None:
        assert (d.decision, d.matched_ids) == ("deny", ())
    else:
        assert set(d.matched_ids) == union


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


def test_a_tools_args_call_names_no_program() -> None:
    call = _args_call(BUILTIN_TOOLS["file_chunker"], {"args": {"path": "/etc/x", "segment": 0}})
    for spec in ({"programs": ["cat"]}, {"names": ["cat"]}, {"argv": ["cat"]}):
        assert not command_predicate(spec, bundled_catalogue())({"call": call})
    assert command_predicate({"reads_any": ["/etc/**"]}, bundled_catalogue())({"call": call})
