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
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from janus_policy.policy.backend import All, AnyOf, Atom, AtomValues, EngineRule, Expr, Not
from janus_policy.policy.load import RISKS, Policy, Rule

#: One fact: the proposal's fields, and `argv` (None when it has no command).
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
        rx = re.compile(arg)
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


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay within a path segment, `**` spans segments."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _any_glob(globs: Sequence[str]) -> re.Pattern[str] | None:
    """One pattern matching a whole string when one of the globs does (None: no glob). A glob's
    pattern has no group, anchor or flag, so their alternation fully matches exactly the strings
    one of them fully matches."""
    return re.compile("|".join(glob_regex(g).pattern for g in globs)) if globs else None


def path_test(globs: Sequence[str]) -> Callable[[str], bool]:
    """Absolute globs match absolute paths, normalized first (so `/work/../etc/shadow` is
    judged as `/etc/shadow`); relative globs match relative paths (the work dir's), never one
    that climbs out with `..`."""
    absolute = _any_glob([g for g in globs if g.startswith("/")])
    relative = _any_glob([g for g in globs if not g.startswith("/")])

    def test(arg: str) -> bool:
        if arg.startswith("/"):
            return absolute is not None and absolute.fullmatch(posixpath.normpath(arg)) is not None
        if ".." in arg.split("/"):
            return False
        return relative is not None and relative.fullmatch(arg) is not None

    return test


def _options(pattern: str | Sequence[str]) -> frozenset[str] | None:
    """The tokens a prefix position allows; None when it allows any (`*`)."""
    options = frozenset([pattern] if isinstance(pattern, str) else pattern)
    return None if "*" in options else options


def _has_flag(args: Sequence[str], flag: str) -> bool:
    for a in args:
        if a == flag or a.startswith(flag + "="):
            return True
        # -r also matches a cluster like -rf, not a long option like --recursive
        short = len(flag) == 2 and flag[0] == "-" and flag[1] != "-"
        if short and a.startswith("-") and not a.startswith("--") and flag[1] in a[1:]:
            return True
    return False


def command_predicate(spec: Mapping[str, Any]) -> Predicate:
    prefix = [_options(p) for p in spec.get("argv", [])]
    flags: list[str] = spec.get("flags", [])
    paths = path_test(spec["paths"]) if "paths" in spec else None
    any_path = path_test(spec["any_path"]) if "any_path" in spec else None

    def test(fact: Fact) -> bool:
        argv = fact.get("argv")
        if not argv or len(argv) < len(prefix):
            return False
        for i, (token, options) in enumerate(zip(argv, prefix, strict=False)):
            # The program matches by its basename too.
            if not (
                options is None
                or token in options
                or (i == 0 and posixpath.basename(token) in options)
            ):
                return False
        rest = argv[max(len(prefix), 1) :]
        if flags and not any(_has_flag(rest, fl) for fl in flags):
            return False
        operands = [a for a in rest if not a.startswith("-")]
        if paths is not None and not all(map(paths, operands)):
            return False
        return any_path is None or any(map(any_path, operands))

    return test


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
    #: Command atoms whose argv prefix names the program, by each name it allows: an argv whose
    #: first token (or its basename) is none of them fails the atom, which is then not evaluated.
    programs: dict[str, tuple[Test, ...]]
    rules: tuple[EngineRule, ...]
    by_id: dict[str, Rule]

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
        argv = fact.get("argv")
        if argv:
            program = argv[0]
            candidates = self.programs.get(program, ())
            if (name := posixpath.basename(program)) != program:
                candidates += self.programs.get(name, ())
            for position, test in candidates:
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
            test = (position, command_predicate(leaf["command"]))
            first = _options(leaf["command"]["argv"][0]) if leaf["command"].get("argv") else None
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
    )
