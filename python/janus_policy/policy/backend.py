"""The rules-engine back end: engine-neutral conditions evaluated by durable_rules.

A condition is a tree of `All` / `AnyOf` / `Not` over `Atom`s. An atom is a predicate the caller
has already evaluated exactly, in Python (regex, argv prefix, glob, comparisons); only its truth
value reaches the engine. durable_rules' own `matches` operator, a small pattern dialect that is
not Python `re`, is therefore never used.

This module drives the engine's C extension (`durable_rules_engine`) directly rather than through
`durable.lang`, whose process-wide host polls every ruleset from two timer threads that no lock of
ours covers, never frees a ruleset, and catches the exceptions raised in actions. An evaluation
checks that every atom has a bool value (`AtomValues`: a byte per atom, in a fixed order of names
checked once), asserts one fact carrying the true atoms (a false one is absent: the engine then
only reads what is true), collects the engine's actions (an action only records which rule fired,
once checked to be on this very fact), and retracts the fact. Each
evaluation has a key of its own: the engine rejects a fact identical to one still asserted. Any
failure raises BackendError: never a partial or empty answer.

The engine fails on inputs past fixed limits, and after some failures its state is corrupt
(freeing it can abort the process), so conditions are compiled to stay within them:

- each condition becomes a disjunction of conjunctions of literals (an atom, or its negation:
  the atom's absence); each conjunction is one engine rule, a chain of alpha nodes, and
  rules sharing a prefix share nodes, as in a trie. A condition whose expansion is too large
  (`_MAX_CONJUNCTIONS`) is refused;
- rules are packed into as many engine rulesets as needed, each asserted its own fact, so that
  a fact holds at most 250 atoms, an alpha node ends at most 255 rules, and the engine's
  depth-first walk of the network never needs more than its 64 stack slots (`_Network`). A
  ruleset whose every rule needs some atom true is not asserted a fact with none.

The engine looks fact fields up by a 32-bit hash of their names and keeps its own `id` and `sid`
there, so atoms never appear under the caller's names: atom i of a ruleset is the field `j.p<i>`,
names that (the tests check) collide neither with each other nor with the engine's fields.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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

    def __init__(self, message: str, rule_id: str | None = None) -> None:
        super().__init__(message)
        #: The rule that could not be built, when one is to blame.
        self.rule_id = rule_id


class AtomValues(Mapping[str, bool]):
    """Every atom's truth value as one byte (1 true, 0 false) at the atom's position in `names`.

    `DurableBackend.matching` reads it without looking at each atom by name: it checks a `names`
    tuple once, so a caller evaluating many facts on the same atoms passes the same tuple each
    time. Any other mapping is converted to one.
    """

    __slots__ = ("bits", "names")

    def __init__(self, names: tuple[str, ...], bits: bytes) -> None:
        self.names = names
        self.bits = bits

    def __getitem__(self, name: str) -> bool:
        if name not in self.names:
            raise KeyError(name)
        return self.bits[self.names.index(name)] == 1

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


# The engine's limits (durable-rules 2.0; tests/test_policy_backend.py checks they still hold).
# A fact's fields share 255 slots and the engine refuses the 255th; nested objects are flattened
# into them. "k", "j" and the engine's own "sid" and "id" leave 250 for atoms.
_MAX_ATOMS_PER_FACT = 250
# The alpha network is walked depth first with a stack of 64 (MAX_STACK_SIZE); an assert that
# overflows it fails half done.
_MAX_WALK = 64
# An alpha node lists its rules in 256 slots, the last of which must stay empty: one more and
# the engine reads past the list (a crash).
_MAX_RULES_PER_NODE = 255
# Rules per ruleset (MAX_ACTIONS).
_MAX_RULES = 4096
# Networks a new engine rule may join: the newest ones (see _networks).
_OPEN_NETWORKS = 4
# Conjunctions a conjunction of disjunctions may expand to: exponential at worst.
_MAX_CONJUNCTIONS = 1024
# assert_fact / retract_fact result codes: RULES_OK, ERR_EVENT_NOT_HANDLED (no rule matched).
_OK, _NOT_HANDLED = 0, 1

# (atom, value it must have); atom None stands for "every fact", tested as `k` existing.
_Literal: TypeAlias = tuple[str | None, bool]
_EVERY_FACT: _Literal = (None, True)

# The extension keeps every ruleset in one process-wide table, is not thread-safe and does not
# release the GIL: every call into it goes through this lock.
_ENGINE_LOCK = threading.Lock()
_ruleset_numbers = itertools.count()


def _property(index: int) -> str:
    """The field of a ruleset's facts, under `j`, holding its atom `index`."""
    return f"p{index}"


def _new_ruleset(definition: str) -> int:
    """A new engine ruleset; the caller holds _ENGINE_LOCK."""
    # A fresh name each time: engine hosts accept a ruleset name once.
    return int(engine.create_ruleset(f"janus{next(_ruleset_numbers)}", definition))


def _conjunctions(expr: Expr, negate: bool = False) -> list[frozenset[_Literal]]:
    """Conjunctions whose disjunction is `expr` (negated if `negate`), contradictions dropped."""
    match expr:
        case Atom(name):
            return [frozenset({(name, not negate)})]
        case Not(item):
            return _conjunctions(item, not negate)
        case All(items) | AnyOf(items):
            alternatives = [_conjunctions(item, negate) for item in items]
            if isinstance(expr, AnyOf) != negate:
                return list(dict.fromkeys(c for alternative in alternatives for c in alternative))
            result: list[frozenset[_Literal]] = [frozenset()]
            for alternative in alternatives:
                products = (a | b for a in result for b in alternative)
                result = list(
                    dict.fromkeys(c for c in products if len({n for n, _ in c}) == len(c))
                )
                if len(result) > _MAX_CONJUNCTIONS:
                    raise BackendError(
                        f"condition too complex for the engine (more than {_MAX_CONJUNCTIONS} "
                        "alternatives once expanded): split the rule"
                    )
            return result
    raise BackendError(f"not a condition: {expr!r}")


@dataclass
class _Node:
    """An alpha node as the engine builds it: one per distinct chain prefix."""

    children: dict[_Literal, _Node] = field(default_factory=dict)
    rules: int = 0  # rules whose chain ends here
    walk: int = 0  # stack slots the engine's walk needs below this node


@dataclass
class _Network:
    """The alpha network of one ruleset, modelled to keep the engine within its limits.

    The engine walks it depth first: it pops a node, then pushes every child the fact matches,
    at most one per atom (a child tests that the atom is there, or that it is not). With F the
    atoms a node's children test, the slots it needs below itself are at most
    F - 1 + max(1, the most any child needs).
    """

    root: _Node = field(default_factory=_Node)
    atoms: dict[str, int] = field(default_factory=dict)  # atom -> i: its field is p<i>
    rules: list[tuple[int, tuple[_Literal, ...]]] = field(default_factory=list)

    def add(self, index: int, chain: tuple[_Literal, ...]) -> bool:
        """Add an engine rule for EngineRule `index`, testing `chain` in order, if it fits."""
        new = {n for n, _ in chain if n is not None and n not in self.atoms}
        if len(self.rules) == _MAX_RULES or len(self.atoms) + len(new) > _MAX_ATOMS_PER_FACT:
            return False
        path = [self.root]
        for literal in chain:
            path.append(path[-1].children.get(literal) or _Node())
        if path[-1].rules == _MAX_RULES_PER_NODE:
            return False
        walks = [path[-1].walk]
        for node, literal in zip(reversed(path[:-1]), reversed(chain), strict=True):
            tested = {n for n, _ in node.children} | {literal[0]}
            others = (c.walk for lit, c in node.children.items() if lit != literal)
            walks.append(len(tested) - 1 + max(1, walks[-1], *others))
        if walks[-1] > _MAX_WALK:
            return False
        for node, literal, child in zip(path[:-1], chain, path[1:], strict=True):
            node.children[literal] = child
        for node, walk in zip(reversed(path), walks, strict=True):
            node.walk = walk
        path[-1].rules += 1
        for n, _ in chain:
            if n is not None:
                self.atoms.setdefault(n, len(self.atoms))
        self.rules.append((index, chain))
        return True

    def member(self, atom: str) -> str:
        """The member of a fact's `j` that says `atom` is true."""
        return f'"{_property(self.atoms[atom])}":true'

    def primer(self) -> str:
        """The `j` of a fact that fires the first rule."""
        chain = self.rules[0][1]
        return "{" + ",".join(self.member(a) for a, v in chain if a is not None and v) + "}"

    def definition(self) -> str:
        """The ruleset in the engine's JSON form. Engine rule i is named r<i>: a rule id could
        carry the engine's own syntax."""
        fields = {atom: f"j.{_property(i)}" for atom, i in self.atoms.items()}

        def test(atom: str | None, value: bool) -> dict[str, object]:
            if atom is None:
                return {"$ex": {"k": 1}}  # every fact has its key
            return {fields[atom]: True} if value else {"$nex": {fields[atom]: 1}}

        rules = {}
        for i, (_, chain) in enumerate(self.rules):
            tests = [test(atom, value) for atom, value in chain]
            condition = tests[0] if len(tests) == 1 else {"$and": tests}
            rules[f"r{i}"] = {"all": [{"m": condition}]}
        return json.dumps(rules)


def _networks(rules: Sequence[EngineRule]) -> list[_Network]:
    conjunctions = []
    for rule in rules:
        try:
            conjunctions.append(_conjunctions(rule.condition))
        except BackendError as e:
            raise BackendError(f"rule {rule.rule_id!r}: {e}", rule.rule_id) from None
    frequency = Counter(lit for alternatives in conjunctions for c in alternatives for lit in c)
    networks: list[_Network] = []
    for index, alternatives in enumerate(conjunctions):
        for conjunction in alternatives:
            # Atoms that must be true go first: they are selective (most atoms are false), and
            # literals shared by many rules first share prefixes, which keeps the walk narrow.
            # A chain must open with a test the engine's own session fact fails (it has no atom
            # and no `k`): one that opened with an absence would fire on it.
            literals = sorted(
                conjunction, key=lambda lit: (not lit[1], -frequency[lit], str(lit[0]))
            )
            chain = tuple(literals) if literals and literals[0][1] else (_EVERY_FACT, *literals)
            # Only the newest networks are tried, newest first: trying every one made building
            # quadratic (115 s for 20,000 rules), and the older ones are full by then.
            if not any(
                network.add(index, chain) for network in reversed(networks[-_OPEN_NETWORKS:])
            ):
                networks.append(_Network())
                if not networks[-1].add(index, chain):
                    raise BackendError(
                        f"rule {rules[index].rule_id!r} needs more than the "
                        f"{_MAX_ATOMS_PER_FACT} atoms a fact holds",
                        rules[index].rule_id,
                    )
    return networks


@dataclass
class _Ruleset:
    """One engine ruleset."""

    definition: str
    rule_index: dict[str, int]  # engine rule name -> position of its EngineRule
    primer: str
    needs_a_true_atom: bool  # every rule opens with an atom that must be true
    handle: int = 0  # 0: none (freed, or abandoned after a failure)


def _as_bits(atoms: Mapping[str, bool]) -> AtomValues:
    if not set(map(type, atoms.values())) <= {bool}:
        name, value = next((n, v) for n, v in atoms.items() if type(v) is not bool)
        raise BackendError(f"atom {name!r}: expected a bool, got {value!r}")
    return AtomValues(tuple(atoms), bytes(atoms.values()))


class DurableBackend:
    """A sequence of rules compiled into durable_rules. Thread-safe; `close()` when done."""

    def __init__(self, rules: Sequence[EngineRule]) -> None:
        self._rule_ids = [rule.rule_id for rule in rules]
        self._keys = itertools.count()
        self._unusable: str | None = None
        self._rulesets: list[_Ruleset] = []
        # atom -> (ruleset, the member of its facts' `j` saying the atom is true)
        self._members: dict[str, list[tuple[int, str]]] = {}
        # The last checked `AtomValues.names`, and the members of each of its atoms.
        self._checked: tuple[tuple[str, ...], tuple[list[tuple[int, str]], ...]] | None = None
        for network in _networks(rules):
            ruleset = _Ruleset(
                network.definition(),
                {f"r{i}": index for i, (index, _) in enumerate(network.rules)},
                network.primer(),
                all(chain[0] != _EVERY_FACT for _, chain in network.rules),
            )
            try:
                with _ENGINE_LOCK:
                    self._open(ruleset)
            except Exception as exc:
                self.close()
                raise BackendError(f"the rules engine refused the rules: {exc!r}") from exc
            for atom in network.atoms:
                self._members.setdefault(atom, []).append(
                    (len(self._rulesets), network.member(atom))
                )
            self._rulesets.append(ruleset)

    def _open(self, ruleset: _Ruleset) -> None:
        """Create the engine ruleset and evaluate a fact that fires a rule. The engine leaves a
        session's action context uninitialised until an action has run, and deleting the
        session before that frees garbage (a crash)."""
        ruleset.handle = _new_ruleset(ruleset.definition)
        hits: set[int] = set()
        try:
            self._evaluate(ruleset, f'{{"k":-1,"j":{ruleset.primer}}}', hits)
            if not hits:
                raise BackendError("the engine did not fire the rule a fact was made for")
        except BaseException:
            engine.delete_ruleset(ruleset.handle)  # not its session: see _replace
            raise

    def matching(self, atoms: Mapping[str, bool]) -> list[str]:
        """The ids of the rules whose condition holds for these atom values, in rule order.

        Every atom the rules use must have a value, and every value must be a bool. Raises
        BackendError, never a partial or empty answer, on a bad value or any engine failure.
        """
        true = self._true_members(atoms if type(atoms) is AtomValues else _as_bits(atoms))
        hits: set[int] = set()
        with _ENGINE_LOCK:
            if self._unusable:
                raise BackendError(self._unusable)
            key = next(self._keys)
            for ruleset, members in zip(self._rulesets, true, strict=True):
                if ruleset.needs_a_true_atom and not members:
                    continue  # none of its rules can hold
                try:
                    self._evaluate(ruleset, f'{{"k":{key},"j":{{{",".join(members)}}}}}', hits)
                except BaseException as exc:
                    self._replace(ruleset)
                    if isinstance(exc, Exception):
                        raise BackendError(f"rules engine failure: {exc!r}") from exc
                    raise
        return [self._rule_ids[index] for index in sorted(hits)]

    def _true_members(self, atoms: AtomValues) -> list[list[str]]:
        """For each ruleset, the members of its fact's `j`: one per true atom."""
        names, bits = atoms.names, atoms.bits
        members = self._members_of(names)
        # Checked wholesale: this runs for every decision, over every atom of a policy.
        if type(bits) is not bytes or len(bits) != len(names) or bits.translate(None, b"\0\1"):
            raise BackendError(f"atom values: expected {len(names)} bytes, each 0 or 1")
        true: list[list[str]] = [[] for _ in self._rulesets]
        position = bits.find(1)  # a search in C: most atoms are false
        while position >= 0:
            for index, member in members[position]:
                true[index].append(member)
            position = bits.find(1, position + 1)
        return true

    def _members_of(self, names: tuple[str, ...]) -> tuple[list[tuple[int, str]], ...]:
        """The members saying each atom of `names` is true, once `names` is known to name every
        atom the rules use, each once."""
        checked = self._checked  # one read: other threads may replace it
        if checked is not None and checked[0] is names:
            return checked[1]
        if type(names) is not tuple or len(set(names)) != len(names):
            raise BackendError(f"atom names: expected a tuple of distinct names: {names!r}")
        if not self._members.keys() <= set(names):
            raise BackendError(
                f"atoms without a value: {sorted(self._members.keys() - set(names))}"
            )
        members = tuple(self._members.get(name, []) for name in names)
        self._checked = (names, members)
        return members

    @staticmethod
    def _evaluate(ruleset: _Ruleset, fact: str, hits: set[int]) -> None:
        code, state = engine.assert_fact(ruleset.handle, fact)
        if code not in (_OK, _NOT_HANDLED):
            raise BackendError(f"the engine did not take the fact (code {code})")
        started = engine.start_action_for_state(ruleset.handle, state)
        messages = None if started is None else started[1]
        while messages is not None:
            # The engine's action is {"<rule>":{"m":<the fact as asserted>}}: record the hit once
            # sure it is on this very fact (cheaper than parsing it).
            name, _, frame = messages[2:].partition('":{"m":')
            if not messages.startswith('{"') or frame != fact + "}}":
                raise BackendError(f"unexpected action from the engine: {messages[:200]}")
            hits.add(ruleset.rule_index[name])
            messages = engine.complete_and_start_action(ruleset.handle, state)
        code, _ = engine.retract_fact(ruleset.handle, fact)
        if code != _OK:
            raise BackendError(f"the engine did not retract the fact (code {code})")

    def _replace(self, ruleset: _Ruleset) -> None:
        """Swap a ruleset a failure left in an unknown state (a stale fact, pending actions, an
        action lease hiding later hits) for a new one. Its session is not freed: after an engine
        error, freeing it can abort the process. If the swap fails, refuse every evaluation."""
        try:
            engine.delete_ruleset(ruleset.handle)
            self._open(ruleset)
        except Exception as exc:
            ruleset.handle = 0
            self._unusable = f"rules engine unusable after a failure: {exc!r}"

    def close(self) -> None:
        """Free the engine's rulesets and their sessions. Later calls to `matching` raise."""
        failures: list[Exception] = []
        with _ENGINE_LOCK:
            self._unusable = "the backend is closed"
            for ruleset in self._rulesets:
                try:
                    if ruleset.handle:
                        # Deleting a ruleset leaves its session allocated: delete that first.
                        engine.delete_state(ruleset.handle, None)
                        engine.delete_ruleset(ruleset.handle)
                        ruleset.handle = 0
                except Exception as exc:
                    failures.append(exc)
        if failures:
            raise BackendError(f"could not release the engine's rulesets: {failures[0]!r}")
