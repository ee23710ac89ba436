"""Compiling a policy to its engine-neutral form.

Every leaf condition (a field test or a command test) becomes an *atom*: a
predicate evaluated exactly, in Python, on one fact (a proposal with one of
the argvs its command would run). Identical leaves share one atom. A rule's
condition becomes a boolean expression over atoms (`All`, `AnyOf`, `Not`),
which the rules engine combines; so regular expressions, argv prefixes and
globs never meet the engine's own pattern dialect.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from janus_policy.policy.backend import All, AnyOf, Atom, EngineRule, Expr, Not
from janus_policy.policy.load import RISKS, Policy, Rule

#: One fact: the proposal's fields, and `argv` (None when it has no command).
Fact = Mapping[str, Any]
Predicate = Callable[[Fact], bool]

_ABSENT = object()


def lookup(fact: Fact, name: str) -> Any:
    """A proposal field by dotted name (`args.path`), or _ABSENT."""
    value: Any = fact
    for part in name.split("."):
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
    name = leaf["field"]
    op, arg = next((k, v) for k, v in leaf.items() if k != "field")
    if op == "exists":
        return lambda f: (lookup(f, name) is not _ABSENT) == arg
    if op == "equals":
        return lambda f: _same(lookup(f, name), arg)
    if op == "in":
        return lambda f: any(_same(lookup(f, name), a) for a in arg)
    if op == "not_in":
        return lambda f: (v := lookup(f, name)) is not _ABSENT and not any(_same(v, a) for a in arg)
    if op == "matches":
        rx = re.compile(arg)
        return lambda f: isinstance(v := lookup(f, name), str) and rx.fullmatch(v) is not None
    bound = _ordered(name, arg)
    if bound is None:
        return lambda f: False
    if op == "at_least":
        return lambda f: (x := _ordered(name, lookup(f, name))) is not None and x >= bound
    if op == "at_most":
        return lambda f: (x := _ordered(name, lookup(f, name))) is not None and x <= bound
    raise ValueError(f"unknown field test {op!r}")


def _same(value: Any, expected: Any) -> bool:
    # True == 1 in Python; a policy saying `equals: 1` must not match `true`.
    return type(value) is type(expected) and value == expected


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


def _path_matches(arg: str, globs: Sequence[str]) -> bool:
    """Absolute globs match absolute paths, normalized first (so
    `/work/../etc/shadow` is judged as `/etc/shadow`); relative globs match
    relative paths (the work dir's), never one that climbs out with `..`."""
    if arg.startswith("/"):
        path = posixpath.normpath(arg)
        return any(glob_regex(g).fullmatch(path) for g in globs if g.startswith("/"))
    if ".." in arg.split("/"):
        return False
    return any(glob_regex(g).fullmatch(arg) for g in globs if not g.startswith("/"))


def _token_matches(token: str, pattern: str | Sequence[str], first: bool) -> bool:
    options = [pattern] if isinstance(pattern, str) else list(pattern)
    if "*" in options:
        return True
    return token in options or (first and posixpath.basename(token) in options)


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
    prefix: list[str | list[str]] = spec.get("argv", [])
    flags: list[str] = spec.get("flags", [])
    paths: list[str] | None = spec.get("paths")
    any_path: list[str] | None = spec.get("any_path")

    def test(fact: Fact) -> bool:
        argv = fact.get("argv")
        if not argv or len(argv) < len(prefix):
            return False
        if not all(
            _token_matches(t, p, i == 0) for i, (t, p) in enumerate(zip(argv, prefix, strict=False))
        ):
            return False
        rest = argv[max(len(prefix), 1) :]
        if flags and not any(_has_flag(rest, fl) for fl in flags):
            return False
        operands = [a for a in rest if not a.startswith("-")]
        if paths is not None and not all(_path_matches(a, paths) for a in operands):
            return False
        return any_path is None or any(_path_matches(a, any_path) for a in operands)

    return test


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    #: Atoms evaluated one by one.
    atoms: dict[str, Predicate]
    #: `field equals value` atoms, indexed: field → (type, value) → atom names.
    #: One lookup settles all of a field's equality tests, however many rules
    #: test it (a policy of 500 `tool equals …` rules costs one dict lookup).
    equalities: dict[str, dict[tuple[str, Any], list[str]]]
    rules: tuple[EngineRule, ...]
    by_id: dict[str, Rule]

    @cached_property
    def _all_false(self) -> dict[str, bool]:
        return {n: False for index in self.equalities.values() for ns in index.values() for n in ns}

    def atom_values(self, fact: Fact) -> dict[str, bool]:
        values = {name: bool(pred(fact)) for name, pred in self.atoms.items()}
        values.update(self._all_false)
        for name, index in self.equalities.items():
            v = lookup(fact, name)
            if v is not _ABSENT and isinstance(v, str | int | float | bool):
                values.update(dict.fromkeys(index.get((type(v).__name__, v), ()), True))
        return values


def compile_policy(policy: Policy) -> CompiledPolicy:
    atoms: dict[str, Predicate] = {}
    equalities: dict[str, dict[tuple[str, Any], list[str]]] = {}
    keys: dict[str, str] = {}

    def atom(leaf: Mapping[str, Any]) -> Atom:
        key = json.dumps(leaf, sort_keys=True)
        if key not in keys:
            name = keys[key] = f"a{len(keys)}"
            if "command" in leaf:
                atoms[name] = command_predicate(leaf["command"])
            elif "equals" in leaf:
                v = leaf["equals"]
                index = equalities.setdefault(leaf["field"], {})
                index.setdefault((type(v).__name__, v), []).append(name)
            else:
                atoms[name] = field_predicate(leaf)
        return Atom(keys[key])

    def expr(cond: Mapping[str, Any]) -> Expr:
        if "all" in cond:
            return All(tuple(expr(c) for c in cond["all"]))
        if "any" in cond:
            return AnyOf(tuple(expr(c) for c in cond["any"]))
        if "not" in cond:
            return Not(expr(cond["not"]))
        return atom(cond)

    rules = tuple(EngineRule(r.id, expr(r.when)) for r in policy.rules)
    return CompiledPolicy(policy, atoms, equalities, rules, {r.id: r for r in policy.rules})
