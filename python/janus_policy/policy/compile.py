"""Compiling a policy to its engine-neutral form.

Every leaf condition (a field test or a command test) becomes an *atom*: a
predicate evaluated exactly, in Python, on one fact (a proposal with one of
the argvs its command would run). Identical leaves share one atom. A rule's
condition becomes a boolean expression over atoms (`All`, `AnyOf`, `Not`),
which the rules engine combines; so regular expressions, argv prefixes and
globs never meet the engine's own pattern dialect.

Per fact, most atoms need no work: `equals` and `in` tests are looked up by
the field's value, and a command test is run only when the program is one it
names. An atom's value is a byte at its position (`AtomValues`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from janus_policy.policy.backend import All, AnyOf, Atom, AtomValues, EngineRule, Expr, Not
from janus_policy.policy.catalogue import Catalogue
from janus_policy.policy.command import Call
from janus_policy.policy.load import RISKS, Policy, Rule
from janus_policy.policy.paths import GlobSet, PathRef, re2_compile

#: One fact: the proposal's fields, and `call` (one program its command runs, or what its tool's
#: args do; None for a tool the policy has no spec of).
Fact = Mapping[str, Any]
Predicate = Callable[[Fact], bool]
#: (position of an atom, its predicate)
Test = tuple[int, Predicate]

_ABSENT = object()


def lookup(fact: Fact, path: Sequence[str]) -> Any:
    """A proposal field by its dotted name split (`args.path`: ("args", "path")), or _ABSENT."""
    value: Any = fact
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _ordered(name: str, value: Any) -> float | None:
    """A comparable number: risk levels by rank, numbers as themselves."""
    if name == "risk":
        return float(RISKS.index(value)) if value in RISKS else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def field_predicate(leaf: Mapping[str, Any]) -> Predicate:
    """A field test other than `equals` and `in` (those are indexed: `CompiledPolicy`)."""
    name = leaf["field"]
    path = tuple(name.split("."))
    op, arg = next((k, v) for k, v in leaf.items() if k != "field")
    if op == "exists":
        return lambda f: (lookup(f, path) is not _ABSENT) == arg
    if op == "not_in":
        return lambda f: (v := lookup(f, path)) is not _ABSENT and not any(_same(v, a) for a in arg)
    if op == "matches":
        rx = re2_compile(arg)
        return lambda f: isinstance(v := lookup(f, path), str) and rx.fullmatch(v) is not None
    bound = _ordered(name, arg)
    if bound is None:
        return lambda f: False
    if op == "at_least":
        return lambda f: (x := _ordered(name, lookup(f, path))) is not None and x >= bound
    if op == "at_most":
        return lambda f: (x := _ordered(name, lookup(f, path))) is not None and x <= bound
    raise ValueError(f"unknown field test {op!r}")


def _same(value: Any, expected: Any) -> bool:
    # True == 1 in Python; a policy saying `equals: 1` must not match `true`.
    return type(value) is type(expected) and value == expected


def _key(value: Any) -> tuple[type, Any]:
    """A value as `_same` compares it, as a dict key: the same values have equal keys."""
    return type(value), value


def _alternatives(pattern: str | Sequence[str]) -> frozenset[str] | None:
    """The tokens a prefix position allows; None when it allows any (`*`)."""
    options = frozenset([pattern] if isinstance(pattern, str) else pattern)
    return None if "*" in options else options


def _is_program(call: Call, names: frozenset[str]) -> bool:
    """The call runs one of these programs: the trusted catalogue program, or for a name the
    catalogue does not know, that bare name."""
    if call.program is not None:
        return call.program in names
    if not call.argv:  # what a tool's args do: no program at all
        return False
    return "/" not in call.argv[0] and call.argv[0] in names and not call.known


def _within(spec: Any) -> Callable[[Call, tuple[PathRef, ...]], bool]:
    """`reads`/`writes`: "none", or globs that must cover every path (of a known program)."""
    if spec == "none":
        return lambda call, paths: not paths
    globs = GlobSet(spec)
    return lambda call, paths: call.known and all(map(globs.covers, paths))


def _any(spec: Sequence[str], sure_only: bool) -> Callable[[tuple[PathRef, ...], bool], bool]:
    globs = GlobSet(spec)
    return lambda paths, guessed: not (sure_only and guessed) and any(map(globs.overlaps, paths))


def _programs(names: Sequence[str], catalogue: Catalogue) -> frozenset[str]:
    """Programs as a rule names them, a trusted path (`/usr/bin/cat`) read as its program."""
    return frozenset(catalogue.identify(n) or n for n in names)


def command_predicate(spec: Mapping[str, Any], catalogue: Catalogue) -> Predicate:
    """A `command` test on a fact's `call` (what one program, or a tool's args, would do)."""
    checks: list[Callable[[Call], bool]] = []
    if "programs" in spec:
        programs = _programs(spec["programs"], catalogue)
        checks.append(lambda c: _is_program(c, programs))
    if "names" in spec:
        names = frozenset(spec["names"])
        checks.append(lambda c: c.name in names)
    if "argv" in spec:
        prefix = [_alternatives(p) for p in spec["argv"]]
        first = None if prefix[0] is None else _programs(sorted(prefix[0]), catalogue)

        def argv_prefix(c: Call) -> bool:
            if len(c.argv) < len(prefix) or (first is not None and not _is_program(c, first)):
                return False
            return all(
                o is None or token in o for token, o in zip(c.argv[1:], prefix[1:], strict=False)
            )

        checks.append(argv_prefix)
    if "subcommands" in spec:
        subcommands = frozenset(spec["subcommands"])
        checks.append(lambda c: c.subcommand in subcommands)
    if "options" in spec:
        options = frozenset(spec["options"])
        checks.append(lambda c: not options.isdisjoint(c.options))
    if "known" in spec:
        known: bool = spec["known"]
        checks.append(lambda c: c.known == known)
    if "reads" in spec:
        reads = _within(spec["reads"])
        checks.append(lambda c: reads(c, c.reads))
    if "writes" in spec:
        writes = _within(spec["writes"])
        checks.append(lambda c: writes(c, c.writes))
    for effect in ("executes", "network"):
        if effect in spec:
            wanted: bool = spec[effect]
            checks.append(lambda c, e=effect, w=wanted: (e in c.effects) == w)  # type: ignore[misc]
    if "reads_any" in spec:
        reads_any = _any(spec["reads_any"], sure_only=True)
        checks.append(lambda c: reads_any(c.reads, c.guessed))
    if "writes_any" in spec:
        writes_any = _any(spec["writes_any"], sure_only=True)
        checks.append(lambda c: writes_any(c.writes, c.guessed))
    if "touches" in spec:
        touches = _any(spec["touches"], sure_only=False)
        checks.append(lambda c: touches(c.reads + c.writes, False))

    def test(fact: Fact) -> bool:
        call = fact.get("call")
        if call is None:
            return False
        for check in checks:  # noqa: SIM110 (a loop: all() over a generator costs more, per fact)
            if not check(call):
                return False
        return True

    return test


def _program_names(spec: Mapping[str, Any], catalogue: Catalogue) -> frozenset[str] | None:
    """The names a call's program must have for the test to hold (for the index), or None."""
    if "programs" in spec:
        return _programs(spec["programs"], catalogue)
    if "names" in spec:
        return frozenset(spec["names"])
    if "argv" in spec:
        first = _alternatives(spec["argv"][0])
        return None if first is None else _programs(sorted(first), catalogue)
    return None


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    #: Every atom, in the order of `atom_values`' bits.
    atoms: tuple[str, ...]
    #: Atoms evaluated one by one, on every fact.
    tests: tuple[Test, ...]
    #: `equals` and `in` atoms, indexed: (field path, `_key` of a value → the atoms that value
    #: makes true). One lookup settles all of a field's equality tests, however many rules
    #: make one (a policy of 500 `tool equals …` rules costs one dict lookup).
    equalities: tuple[tuple[tuple[str, ...], dict[tuple[type, Any], tuple[int, ...]]], ...]
    #: Command atoms that name the program, by each name they allow: a call whose program and
    #: basename are none of them fails the atom, which is then not evaluated.
    programs: dict[str, tuple[Test, ...]]
    rules: tuple[EngineRule, ...]
    by_id: dict[str, Rule]
    #: Whether some rule carves an exception (`overrides`) out of others.
    has_exceptions: bool = False

    def atom_values(self, fact: Fact) -> AtomValues:
        bits = bytearray(len(self.atoms))
        for position, test in self.tests:
            if test(fact):
                bits[position] = 1
        for path, index in self.equalities:
            v = lookup(fact, path)
            if isinstance(v, str | int | float | bool):  # what a policy compares with
                for position in index.get(_key(v), ()):
                    bits[position] = 1
        call: Call | None = fact.get("call")
        if call is not None and call.argv:
            # Rules are indexed by catalogue program (trusted paths read as their program)
            # and by basename; a bare argv[0] is its own basename.
            for name in {call.name, call.program}:
                for position, test in self.programs.get(name, ()) if name else ():
                    if test(fact):
                        bits[position] = 1
        return AtomValues(self.atoms, bytes(bits))


def compile_policy(policy: Policy) -> CompiledPolicy:
    keys: dict[str, Atom] = {}
    tests: list[Test] = []
    equalities: dict[str, dict[tuple[type, Any], list[int]]] = {}
    programs: dict[str, list[Test]] = {}

    def atom(leaf: Mapping[str, Any]) -> Atom:
        key = json.dumps(leaf, sort_keys=True)
        if key in keys:
            return keys[key]
        position = len(keys)
        if "command" in leaf:
            test = (position, command_predicate(leaf["command"], policy.catalogue))
            first = _program_names(leaf["command"], policy.catalogue)
            for name in first or ():
                programs.setdefault(name, []).append(test)
            if first is None:
                tests.append(test)
        elif "equals" in leaf or "in" in leaf:
            index = equalities.setdefault(leaf["field"], {})
            for value in [leaf["equals"]] if "equals" in leaf else leaf["in"]:
                index.setdefault(_key(value), []).append(position)
        else:
            tests.append((position, field_predicate(leaf)))
        keys[key] = Atom(f"a{position}")
        return keys[key]

    def expr(cond: Mapping[str, Any]) -> Expr:
        if "all" in cond:
            return All(tuple(expr(c) for c in cond["all"]))
        if "any" in cond:
            return AnyOf(tuple(expr(c) for c in cond["any"]))
        if "not" in cond:
            return Not(expr(cond["not"]))
        return atom(cond)

    rules = tuple(EngineRule(r.id, expr(r.when)) for r in policy.rules)
    return CompiledPolicy(
        policy,
        tuple(a.name for a in keys.values()),
        tuple(tests),
        tuple(
            (tuple(name.split(".")), {k: tuple(ps) for k, ps in index.items()})
            for name, index in equalities.items()
        ),
        {name: tuple(ts) for name, ts in programs.items()},
        rules,
        {r.id: r for r in policy.rules},
        any(r.overrides for r in policy.rules),
    )
