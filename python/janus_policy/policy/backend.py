"""The rules-engine back end: engine-neutral conditions evaluated by durable_rules.

A condition is a tree of `All` / `AnyOf` / `Not` over `Atom`s. An atom is a predicate the caller
has already evaluated exactly, in Python (regex, argv prefix, glob, comparisons); only its truth
value reaches the engine. durable_rules' own `matches` operator, a small pattern dialect that is
not Python `re`, is therefore never used.

This module drives the engine's C extension (`durable_rules_engine`) directly rather than through
`durable.lang`, whose process-wide host polls every ruleset from two timer threads that no lock of
ours covers, keeps every ruleset it ever registered, and catches exceptions raised in actions.
Here an evaluation is: assert one fact carrying the truth values, collect the engine's actions
(an action only records which rule fired, for this fact's key), retract the fact. Each evaluation
gets a key of its own because the engine rejects a fact identical to one still asserted.

Engine limits shape the compilation (the values are those of durable-rules 2.0; the tests check
that they still hold):

- a rule's condition holds at most 15 `$and`/`$or` operators (`_MAX_OPERATORS`): conditions are
  put in negation normal form (a negated atom is a comparison with `false`), a top-level `AnyOf`
  becomes one engine rule per alternative, and an `All` still too deep has one of its `AnyOf`
  distributed over it until every part fits;
- a fact holds at most 250 atoms (`_MAX_ATOMS_PER_FACT`): rules are spread over as many engine
  rulesets as needed, each asserted its own fact with only the atoms its rules use.

The engine looks fact fields up by a 32-bit hash of their names and keeps its own `id` and `sid`
there, so atoms never appear under the caller's names: atom i of a ruleset is `j.p<i>`, a set of
names checked (by the tests) to collide neither with each other nor with the engine's fields.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import durable_rules_engine as engine

from janus_policy.errors import JanusError


@dataclass(frozen=True)
class Atom:
    """A predicate already evaluated by the caller; its truth value arrives with each fact."""

    name: str


@dataclass(frozen=True)
class All:
    """Holds when every item holds (an empty `All` always holds)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class AnyOf:
    """Holds when some item holds (an empty `AnyOf` never holds)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr: TypeAlias = Atom | All | AnyOf | Not


@dataclass(frozen=True)
class EngineRule:
    rule_id: str
    condition: Expr


class BackendError(JanusError):
    """The engine could not build or evaluate a rule set; the caller must fail closed."""


# A fact's fields share a table of 255 slots (MAX_OBJECT_PROPERTIES) and the engine refuses the
# 255th; nested objects are flattened into it. "k", "j" and the engine's "sid" and "id" leave 250.
_MAX_ATOMS_PER_FACT = 250
# Each `$and` / `$or` takes two of the 32 slots of a rule's expression sequence, and the engine
# refuses to fill the last one.
_MAX_OPERATORS = 15
# Distributing `AnyOf`s is exponential at worst: past this many engine rules for one rule, refuse.
_MAX_PARTS = 256
# assert_fact / retract_fact result codes: RULES_OK, ERR_EVENT_NOT_HANDLED (no rule matched).
_OK, _NOT_HANDLED = 0, 1

_TRUE = All(())
_FALSE = AnyOf(())

# The extension keeps every ruleset in one process-wide table, is not thread-safe and does not
# release the GIL: every call into it goes through this lock.
_ENGINE_LOCK = threading.Lock()
_ruleset_numbers = itertools.count()


def _property(index: int) -> str:
    """The fact field holding atom `index` of a ruleset."""
    return f"p{index}"


def _nnf(expr: Expr, negate: bool = False) -> Expr:
    """`expr` (negated if `negate`) with every `Not` pushed down onto an atom, nested operators of
    one kind merged, duplicates and constants folded away."""
    match expr:
        case Atom():
            return Not(expr) if negate else expr
        case Not(item):
            return _nnf(item, not negate)
        case All(items) | AnyOf(items):
            conjunction = isinstance(expr, All) != negate
            return _join(conjunction, [_nnf(item, negate) for item in items])
    raise BackendError(f"not a condition: {expr!r}")


def _join(conjunction: bool, parts: Sequence[Expr]) -> Expr:
    kind, absorbing = (All, _FALSE) if conjunction else (AnyOf, _TRUE)
    items: dict[Expr, None] = {}
    for part in parts:
        if part == absorbing:
            return absorbing
        items.update(dict.fromkeys(part.items) if isinstance(part, kind) else {part: None})
    return next(iter(items)) if len(items) == 1 else kind(tuple(items))


def _operators(expr: Expr) -> int:
    if isinstance(expr, All | AnyOf):
        return 1 + sum(_operators(item) for item in expr.items)
    return 0


def _parts(expr: Expr) -> Iterator[Expr]:
    """Conditions, each within the engine's operator limit, of which `expr` (in negation normal
    form) is the disjunction."""
    if isinstance(expr, AnyOf):
        for item in expr.items:
            yield from _parts(item)
    elif _operators(expr) <= _MAX_OPERATORS:
        yield expr
    else:
        # Too deep, so an All with an AnyOf among its items: All(a, AnyOf(b, c)) is
        # AnyOf(All(a, b), All(a, c)), each part one operator smaller.
        assert isinstance(expr, All)
        i, alternatives = next((i, x) for i, x in enumerate(expr.items) if isinstance(x, AnyOf))
        rest = expr.items[:i] + expr.items[i + 1 :]
        for alternative in alternatives.items:
            yield from _parts(_join(True, [*rest, alternative]))


def _atoms(expr: Expr) -> Iterator[str]:
    match expr:
        case Atom(name) | Not(Atom(name)):
            yield name
        case All(items) | AnyOf(items):
            for item in items:
                yield from _atoms(item)


def _to_engine(expr: Expr, fields: Mapping[str, str]) -> dict[str, object]:
    """The engine's JSON condition for `expr`, in negation normal form."""
    match expr:
        case Atom(name):
            return {fields[name]: True}
        case Not(Atom(name)):
            return {fields[name]: False}
        case All(()):
            return {"$ex": {"k": 1}}  # every fact has its key
        case All(items):
            return {"$and": [_to_engine(item, fields) for item in items]}
        case AnyOf(items):
            return {"$or": [_to_engine(item, fields) for item in items]}
    raise AssertionError(expr)


@dataclass
class _Ruleset:
    """One engine ruleset and the atoms its facts carry."""

    handle: int
    atoms: tuple[str, ...]  # atom i is the fact's field j.p<i>
    rule_index: dict[str, int]  # engine rule name -> position of its EngineRule
    has_session: bool = False  # the engine holds state for it (created by the first assert)


class DurableBackend:
    """A sequence of rules compiled into durable_rules. Thread-safe; `close()` when done."""

    def __init__(self, rules: Sequence[EngineRule]) -> None:
        self._rule_ids = [rule.rule_id for rule in rules]
        self._keys = itertools.count()
        self._rulesets: list[_Ruleset] = []
        self._unusable: str | None = None
        try:
            for chunk in self._chunks(rules):
                self._rulesets.append(self._create(chunk))
        except Exception as exc:
            self.close()
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"the rules engine refused the rules: {exc}") from exc

    @staticmethod
    def _chunks(rules: Sequence[EngineRule]) -> Iterator[list[tuple[int, list[Expr]]]]:
        """(position, engine conditions) of each rule, grouped so that no fact needs more atoms
        than the engine holds. A rule that can never hold has no condition and is left out."""
        chunk: list[tuple[int, list[Expr]]] = []
        chunk_atoms: set[str] = set()
        for index, rule in enumerate(rules):
            parts = list(itertools.islice(_parts(_nnf(rule.condition)), _MAX_PARTS + 1))
            if len(parts) > _MAX_PARTS:
                raise BackendError(f"rule {rule.rule_id!r}: condition too complex for the engine")
            atoms = {name for part in parts for name in _atoms(part)}
            if len(atoms) > _MAX_ATOMS_PER_FACT:
                raise BackendError(
                    f"rule {rule.rule_id!r} uses {len(atoms)} atoms; one fact holds "
                    f"{_MAX_ATOMS_PER_FACT}"
                )
            if not parts:
                continue
            if len(chunk_atoms | atoms) > _MAX_ATOMS_PER_FACT:
                yield chunk
                chunk, chunk_atoms = [], set()
            chunk.append((index, parts))
            chunk_atoms |= atoms
        if chunk:
            yield chunk

    @staticmethod
    def _create(chunk: list[tuple[int, list[Expr]]]) -> _Ruleset:
        atoms = tuple(
            dict.fromkeys(name for _, parts in chunk for p in parts for name in _atoms(p))
        )
        fields = {name: f"j.{_property(i)}" for i, name in enumerate(atoms)}
        definition: dict[str, object] = {}
        rule_index: dict[str, int] = {}
        for index, parts in chunk:
            for n, part in enumerate(parts):
                # Engine rule names are ours: a rule id could carry the engine's own syntax.
                name = f"r{index}_{n}"
                definition[name] = {"all": [{"m": _to_engine(part, fields)}]}
                rule_index[name] = index
        with _ENGINE_LOCK:
            # A fresh name for every ruleset: the engine's hosts accept a name once.
            name = f"janus{next(_ruleset_numbers)}"
            handle = engine.create_ruleset(name, json.dumps(definition))
        return _Ruleset(handle, atoms, rule_index)

    def matching(self, atoms: Mapping[str, bool]) -> list[str]:
        """The ids of the rules whose condition holds for these atom values, in rule order.

        Every atom the rules use must have a bool value (others are ignored). Raises
        BackendError, never a partial or empty answer, on a bad value or any engine failure.
        """
        values = [(ruleset, self._values(ruleset, atoms)) for ruleset in self._rulesets]
        hits: set[int] = set()
        with _ENGINE_LOCK:
            if self._unusable:
                raise BackendError(self._unusable)
            key = next(self._keys)
            for ruleset, fields in values:
                try:
                    self._evaluate(ruleset, f'{{"k":{key},"j":{fields}}}', key, hits)
                except BaseException as exc:
                    self._discard_session(ruleset)
                    if isinstance(exc, Exception):
                        raise BackendError(f"rules engine failure: {exc!r}") from exc
                    raise
        return [self._rule_ids[index] for index in sorted(hits)]

    @staticmethod
    def _values(ruleset: _Ruleset, atoms: Mapping[str, bool]) -> str:
        fields = {}
        for i, name in enumerate(ruleset.atoms):
            value = atoms.get(name)
            if not isinstance(value, bool):
                raise BackendError(f"atom {name!r}: expected a bool, got {value!r}")
            fields[_property(i)] = value
        return json.dumps(fields)

    @staticmethod
    def _evaluate(ruleset: _Ruleset, fact: str, key: int, hits: set[int]) -> None:
        ruleset.has_session = True
        code, state = engine.assert_fact(ruleset.handle, fact)
        if code not in (_OK, _NOT_HANDLED):
            raise BackendError(f"the engine did not take the fact (code {code})")
        started = engine.start_action_for_state(ruleset.handle, state)
        messages = None if started is None else started[1]
        while messages is not None:
            # {"<rule>": {"m": <fact>}}: record the hit, after checking it is this fact's.
            [(name, frame)] = json.loads(messages).items()
            if frame["m"]["k"] != key:
                raise BackendError(f"the engine acted on another fact: {messages[:200]}")
            hits.add(ruleset.rule_index[name])
            messages = engine.complete_and_start_action(ruleset.handle, state)
        code, _ = engine.retract_fact(ruleset.handle, fact)
        if code != _OK:
            raise BackendError(f"the engine did not retract the fact (code {code})")

    def _discard_session(self, ruleset: _Ruleset) -> None:
        """Drop what a failed evaluation left (fact, pending actions, an action lease that would
        hide later hits): the ruleset is as new. If even that fails, refuse all evaluations."""
        try:
            engine.delete_state(ruleset.handle, None)
            ruleset.has_session = False
        except Exception as exc:
            self._unusable = f"rules engine in an unknown state after a failure: {exc!r}"

    def close(self) -> None:
        """Free the engine's rulesets and their state. Later calls to `matching` raise."""
        failures: list[Exception] = []
        with _ENGINE_LOCK:
            self._unusable = "the backend is closed"
            rulesets, self._rulesets = self._rulesets, []
            for ruleset in rulesets:
                try:
                    # Deleting a ruleset leaves its state allocated: delete that first.
                    if ruleset.has_session:
                        engine.delete_state(ruleset.handle, None)
                    engine.delete_ruleset(ruleset.handle)
                except Exception as exc:
                    failures.append(exc)
        if failures:
            raise BackendError(f"could not release the engine's rulesets: {failures[0]!r}")
