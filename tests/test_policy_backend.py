"""The durable_rules back end: conditions agree with plain Python evaluation, and each known
engine trap (DESIGN.md §4) is handled. Tests named `test_engine_*` check the engine itself, so an
upgrade of durable-rules that moves one of the limits the back end relies on fails here first."""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import durable_rules_engine as engine
import pytest
from janus_policy.policy import backend
from janus_policy.policy.backend import (
    All,
    AnyOf,
    Atom,
    BackendError,
    DurableBackend,
    EngineRule,
    Expr,
    Not,
)


def holds(expr: Expr, values: Mapping[str, bool]) -> bool:
    match expr:
        case Atom(name):
            return values[name]
        case Not(item):
            return not holds(item, values)
        case All(items):
            return all(holds(item, values) for item in items)
        case AnyOf(items):
            return any(holds(item, values) for item in items)


def expected(rules: list[EngineRule], values: Mapping[str, bool]) -> list[str]:
    return [rule.rule_id for rule in rules if holds(rule.condition, values)]


def assignments(names: list[str]) -> Iterator[dict[str, bool]]:
    for bits in itertools.product((False, True), repeat=len(names)):
        yield dict(zip(names, bits, strict=True))


def random_expr(rng: random.Random, names: list[str], depth: int) -> Expr:
    if depth == 0 or rng.random() < 0.15:
        return Atom(rng.choice(names))
    kind = rng.choice(["all", "any", "not"])
    if kind == "not":
        return Not(random_expr(rng, names, depth - 1))
    items = tuple(random_expr(rng, names, depth - 1) for _ in range(rng.randint(0, 6)))
    return All(items) if kind == "all" else AnyOf(items)


def layered_expr(rng: random.Random, names: list[str], depth: int, conjunction: bool) -> Expr:
    """Alternating All / AnyOf layers: up to ~150 conjunctions at depth 3."""
    if depth == 0:
        atom = Atom(rng.choice(names))
        return Not(atom) if rng.random() < 0.3 else atom
    items = tuple(
        layered_expr(rng, names, depth - 1, not conjunction) for _ in range(rng.randint(2, 4))
    )
    return All(items) if conjunction else AnyOf(items)


def policy_expr(rng: random.Random, names: list[str]) -> Expr:
    """Shaped like a policy rule: some tests, alternatives, exclusions; a few atoms (the tool,
    the action type) are shared by many rules."""

    def pick(k: int) -> tuple[Expr, ...]:
        return tuple(Atom(n) for n in rng.sample(names[: rng.choice([8, 30, len(names)])], k))

    items = [*pick(rng.randint(1, 3))]
    if rng.random() < 0.5:
        items.append(AnyOf(pick(rng.randint(2, 6))))
    if rng.random() < 0.3:
        items.append(Not(AnyOf(pick(rng.randint(1, 4)))))
    if rng.random() < 0.2:
        items.append(AnyOf((All(pick(2)), All(pick(2)), Not(All(pick(2))))))
    return All(tuple(items))


@pytest.fixture
def make() -> Iterator[type[DurableBackend]]:
    """DurableBackend, closing every backend the test built."""
    built: list[DurableBackend] = []

    class Closing(DurableBackend):
        def __init__(self, rules: list[EngineRule]) -> None:
            super().__init__(rules)
            built.append(self)

    yield Closing
    for b in built:
        b.close()


X, Y, Z = Atom("x"), Atom("y"), Atom("z")


# ---- conditions ----


def test_conditions_and_rule_order(make: type[DurableBackend]) -> None:
    rules = [
        EngineRule("x", X),
        EngineRule("not-x", Not(X)),
        EngineRule("x.and.y", All((X, Y))),
        EngineRule("x|y", AnyOf((X, Y))),
        EngineRule("nor", Not(AnyOf((X, Y, Z)))),
        EngineRule("nested", AnyOf((All((X, Not(Y))), All((Not(X), AnyOf((Y, Z))))))),
        EngineRule("double-not", Not(Not(Z))),
        EngineRule("contradiction", All((X, Not(X)))),
        EngineRule("x", All((X, Z))),  # ids need not be unique: each rule is reported
    ]
    b = make(rules)
    for values in assignments(["x", "y", "z"]):
        assert b.matching(values) == expected(rules, values), values


def test_constant_conditions(make: type[DurableBackend]) -> None:
    rules = [
        EngineRule("always", All(())),
        EngineRule("never", AnyOf(())),
        EngineRule("not-never", Not(AnyOf(()))),
        EngineRule("absorbed", All((X, AnyOf(())))),
        EngineRule("x", AnyOf((X, AnyOf(())))),
    ]
    b = make(rules)
    assert b.matching({"x": False}) == ["always", "not-never"]
    assert b.matching({"x": True}) == ["always", "not-never", "x"]
    assert make([EngineRule("never", AnyOf(()))]).matching({}) == []
    assert make([]).matching({}) == []


def test_random_conditions_agree_with_python(make: type[DurableBackend]) -> None:
    rng = random.Random(20240611)
    names = ["a", "b", "c", "d", "e", "f", "g", "id"]
    rules = [EngineRule(f"r{i}", random_expr(rng, names, rng.randint(1, 4))) for i in range(240)]
    rules += [EngineRule(f"l{i}", layered_expr(rng, names, 3, i % 2 == 0)) for i in range(60)]
    b = make(rules)
    for values in assignments(names):
        assert b.matching(values) == expected(rules, values), values


def test_nested_condition(make: type[DurableBackend]) -> None:
    # All(z, AnyOf of 20 conjunctions, Not(AnyOf of 3 conjunctions)): 160 conjunctions.
    names = [f"v{i}" for i in range(5)]
    pairs = [All((Atom(a), Not(Atom(b)))) for a, b in itertools.permutations(names, 2)]
    rules = [EngineRule("deep", All((Z, AnyOf(tuple(pairs)), Not(AnyOf(tuple(pairs[:3]))))))]
    b = make(rules)
    for values in assignments([*names, "z"]):
        assert b.matching(values) == expected(rules, values)


def test_too_complex_condition_is_refused() -> None:
    # 11 disjunctions of two atoms, in a conjunction: 2**11 conjunctions.
    cond = All(tuple(AnyOf((Atom(f"a{i}"), Atom(f"b{i}"))) for i in range(11)))
    with pytest.raises(BackendError, match="too complex"):
        DurableBackend([EngineRule("wide", cond)])


def test_not_a_condition_is_refused() -> None:
    with pytest.raises(BackendError, match="not a condition"):
        DurableBackend([EngineRule("bad", {"atom": "x"})])  # type: ignore[arg-type]


def test_rule_ids_are_reported_verbatim(make: type[DurableBackend]) -> None:
    ids = ["deny.rm-rf", "r0", "m$all", 'quote"d', "ünï code", ""]
    b = make([EngineRule(i, X) for i in ids])
    assert b.matching({"x": True}) == ids


def test_500_rules(make: type[DurableBackend]) -> None:
    rng = random.Random(500)
    names = [f"a{i}" for i in range(150)]
    rules = [EngineRule(f"r{i}", policy_expr(rng, names)) for i in range(500)]
    b = make(rules)
    for _ in range(100):
        values = {n: rng.random() < 0.6 for n in names}
        assert b.matching(values) == expected(rules, values)


# ---- the engine's limits: more atoms than a fact holds, a network too wide to walk ----


def test_atoms_spread_over_several_facts(make: type[DurableBackend]) -> None:
    names = [f"a{i}" for i in range(600)]
    rules = [
        EngineRule(f"r{i}", All((Atom(n), Not(Atom(names[i - 1]))))) for i, n in enumerate(names)
    ]
    rules.append(EngineRule("first-and-last", All((Atom(names[0]), Atom(names[-1])))))
    b = make(rules)
    assert len(b._rulesets) >= 3
    rng = random.Random(7)
    for _ in range(20):
        values = {n: rng.random() < 0.5 for n in names}
        assert b.matching(values) == expected(rules, values)


def test_rule_using_as_many_atoms_as_a_fact_holds(make: type[DurableBackend]) -> None:
    names = [f"a{i}" for i in range(backend._MAX_ATOMS_PER_FACT)]
    b = make([EngineRule("wide", All(tuple(Atom(n) for n in names)))])
    values = dict.fromkeys(names, True)
    assert b.matching(values) == ["wide"]
    assert b.matching({**values, names[-1]: False}) == []


def test_rule_using_more_atoms_than_a_fact_holds(make: type[DurableBackend]) -> None:
    names = [f"a{i}" for i in range(backend._MAX_ATOMS_PER_FACT + 1)]
    b = make([EngineRule("any", AnyOf(tuple(Atom(n) for n in names)))])  # one atom per engine rule
    assert b.matching({**dict.fromkeys(names, False), names[-1]: True}) == ["any"]
    with pytest.raises(BackendError, match="atoms"):
        DurableBackend([EngineRule("all", All(tuple(Atom(n) for n in names)))])


def test_network_limits(make: type[DurableBackend]) -> None:
    # In one ruleset, the first rules would overflow the engine's walk (200 matching children
    # under x), the others a node's rule list (400 rules ending at x).
    names = [f"a{i}" for i in range(200)]
    fanning = [EngineRule(n, All((X, Atom(n)))) for n in names]
    same = [EngineRule(f"x{i}", X) for i in range(400)]
    b = make(fanning + same)
    assert len(b._rulesets) > 2
    values = {**dict.fromkeys(names, True), "x": True}
    assert b.matching(values) == [r.rule_id for r in fanning + same]
    assert b.matching({**values, "x": False}) == []


@contextmanager
def raw_ruleset(definition: dict[str, object]) -> Iterator[int]:
    """An engine ruleset, to test the engine itself. Its session is not freed: the engine frees
    garbage unless an action has run (see DurableBackend._open)."""
    with backend._ENGINE_LOCK:
        handle = int(
            engine.create_ruleset(f"canary{random.getrandbits(64)}", json.dumps(definition))
        )
    try:
        yield handle
    finally:
        with backend._ENGINE_LOCK:
            engine.delete_ruleset(handle)


def fact(atoms: int) -> str:
    return json.dumps({"k": 0, "j": {backend._property(i): True for i in range(atoms)}})


def test_engine_fact_size_limit() -> None:
    with raw_ruleset({"r": {"all": [{"m": {"j.p0": True}}]}}) as handle, backend._ENGINE_LOCK:
        assert engine.assert_fact(handle, fact(backend._MAX_ATOMS_PER_FACT))[0] == backend._OK
        with pytest.raises(engine.error, match="302"):  # ERR_EVENT_MAX_PROPERTIES
            engine.assert_fact(handle, fact(backend._MAX_ATOMS_PER_FACT + 1))


def test_engine_walk_limit() -> None:
    def fanning_out(n: int) -> dict[str, object]:
        return {f"r{i}": {"all": [{"m": {f"j.{backend._property(i)}": True}}]} for i in range(n)}

    with raw_ruleset(fanning_out(backend._MAX_WALK)) as handle, backend._ENGINE_LOCK:
        assert engine.assert_fact(handle, fact(backend._MAX_WALK))[0] == backend._OK
    with (
        raw_ruleset(fanning_out(backend._MAX_WALK + 1)) as handle,
        backend._ENGINE_LOCK,
        pytest.raises(engine.error, match="303"),  # ERR_MAX_STACK_SIZE
    ):
        engine.assert_fact(handle, fact(backend._MAX_WALK + 1))


# ---- trap: `matches` is its own regex dialect ----
# Nothing to test: the back end only emits equality and existence tests; regexes arrive as atoms.


# ---- trap: fields named id / sid are the engine's own ----


def fnv1a_32(text: str) -> int:
    """The engine's hash of a field name; fields are looked up by this hash alone."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def test_engine_field_hashes_are_fnv1a() -> None:
    assert fnv1a_32("id") == 926444256  # HASH_ID in the engine's state.h
    assert fnv1a_32("sid") == 3593476751  # HASH_SID


def test_fact_fields_never_collide() -> None:
    fields = [f"j.{backend._property(i)}" for i in range(backend._MAX_ATOMS_PER_FACT)]
    fields += ["k", "j", "id", "sid", "$forward", "$s"]
    assert len({fnv1a_32(f) for f in fields}) == len(fields)


def test_absences_never_match_the_engines_session_fact(make: type[DurableBackend]) -> None:
    # The engine passes its own session fact ({"sid", "id", "$s"}) through the network; a false
    # atom is absent from a fact, so a rule testing absences only would fire on it.
    rules = [EngineRule("not-x", Not(X)), EngineRule("nor", Not(AnyOf((X, Y))))]
    b = make(rules)
    for values in assignments(["x", "y"]):
        assert b.matching(values) == expected(rules, values)


def test_atoms_named_id_and_sid(make: type[DurableBackend]) -> None:
    rules = [
        EngineRule("id", Atom("id")),
        EngineRule("sid", Atom("sid")),
        EngineRule("neither", Not(AnyOf((Atom("id"), Atom("sid"))))),
        EngineRule("ours", All((Atom("k"), Atom("j"), Atom("p0")))),
    ]
    b = make(rules)
    results: list[tuple[dict[str, bool], list[str]]] = []

    def run() -> None:
        for values in assignments(["id", "sid", "k", "j", "p0"]):
            results.append((values, b.matching(values)))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "evaluation loops"
    assert len(results) == 32
    for values, got in results:
        assert got == expected(rules, values)


# ---- trap: asserting a fact identical to one still asserted ----


def test_engine_rejects_a_fact_identical_to_one_asserted() -> None:
    with raw_ruleset({"r": {"all": [{"m": {"x": True}}]}}) as handle, backend._ENGINE_LOCK:
        assert engine.assert_fact(handle, '{"x": true}')[0] == backend._OK
        assert engine.assert_fact(handle, '{"x": true}')[0] == 2  # ERR_EVENT_OBSERVED


def test_same_atoms_twice_in_a_row(make: type[DurableBackend]) -> None:
    b = make([EngineRule("x", X), EngineRule("not-x", Not(X))])
    assert b.matching({"x": True}) == ["x"]
    assert b.matching({"x": True}) == ["x"]
    assert b.matching({"x": False}) == ["not-x"]
    assert b.matching({"x": False}) == ["not-x"]


def test_same_atoms_a_thousand_times(make: type[DurableBackend]) -> None:
    rules = [EngineRule("x", X), EngineRule("x-or-y", AnyOf((X, Y))), EngineRule("y", Y)]
    b = make(rules)
    for _ in range(1000):
        assert b.matching({"x": True, "y": False}) == ["x", "x-or-y"]


# ---- trap: exceptions in actions are swallowed; a failure must never read as "no match" ----


@pytest.mark.parametrize("value", [None, 1, "true", 0.0])
def test_bad_atom_values_raise(make: type[DurableBackend], value: object) -> None:
    b = make([EngineRule("x", X), EngineRule("never", Not(Atom("y")))])
    with pytest.raises(BackendError, match="'y'"):
        b.matching({"x": True, "y": value})  # type: ignore[dict-item]
    with pytest.raises(BackendError, match="'y'"):
        b.matching({"x": True})


def boom(*args: object) -> object:
    raise engine.error("injected failure")


def once(forged: Callable[..., object], real: Callable[..., object]) -> Callable[..., object]:
    """`forged` on the first call, `real` after."""
    calls = itertools.count()

    def call(*args: object) -> object:
        return (forged if next(calls) == 0 else real)(*args)

    return call


@pytest.mark.parametrize(
    "function", ["assert_fact", "start_action_for_state", "complete_and_start_action"]
)
def test_engine_failure_raises_then_recovers(
    make: type[DurableBackend], monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    b = make([EngineRule("x", X), EngineRule("x-or-y", AnyOf((X, Y)))])
    assert b.matching({"x": True, "y": True}) == ["x", "x-or-y"]
    monkeypatch.setattr(engine, function, once(boom, getattr(engine, function)))
    with pytest.raises(BackendError, match="injected failure"):
        b.matching({"x": True, "y": True})
    # Nothing left over: no stale hit, no action lease hiding the next hits.
    assert b.matching({"x": False, "y": False}) == []
    assert b.matching({"x": True, "y": False}) == ["x", "x-or-y"]


@pytest.mark.parametrize("function", ["assert_fact", "retract_fact"])
@pytest.mark.parametrize("code", [2, 104])  # ERR_EVENT_OBSERVED, any other
def test_unexpected_result_code_raises(
    make: type[DurableBackend], monkeypatch: pytest.MonkeyPatch, function: str, code: int
) -> None:
    b = make([EngineRule("x", X)])
    monkeypatch.setattr(engine, function, once(lambda *args: (code, 1), getattr(engine, function)))
    with pytest.raises(BackendError, match=f"code {code}"):
        b.matching({"x": True})
    assert b.matching({"x": True}) == ["x"]


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: re.sub(r'"k":\d+', '"k":-2', m),  # another fact's action
        lambda m: m.replace('{"r0"', '{"r9"', 1),  # a rule we did not define
        lambda m: m[:-1] + ',"r0":' + m[m.index("{", 1) : -1] + "}",  # not one action
        lambda m: m + " ",
        lambda m: "not json",
    ],
)
def test_unexpected_action_raises(
    make: type[DurableBackend], monkeypatch: pytest.MonkeyPatch, forge: Callable[[str], str]
) -> None:
    b = make([EngineRule("x", X)])
    real = engine.start_action_for_state

    def forged(handle: int, state: int) -> tuple[str, str]:
        started = real(handle, state)
        return started[0], forge(started[1])

    monkeypatch.setattr(engine, "start_action_for_state", once(forged, real))
    with pytest.raises(BackendError, match=r"unexpected action|KeyError"):
        b.matching({"x": True})
    assert b.matching({"x": True}) == ["x"]


def test_engine_error_mid_assert(
    make: type[DurableBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A network the engine cannot walk (the model's limit lifted): the assert fails half done,
    # leaving a corrupt session. Every such evaluation must raise, and the process survive.
    names = [f"a{i}" for i in range(backend._MAX_WALK)]
    monkeypatch.setattr(backend, "_MAX_WALK", 1000)
    b = make([EngineRule(n, All((Atom(n), AnyOf((Y, Z))))) for n in names])
    assert len(b._rulesets) == 1
    every = {**dict.fromkeys(names, True), "y": True, "z": True}
    for _ in range(3):
        with pytest.raises(BackendError, match="303"):  # ERR_MAX_STACK_SIZE
            b.matching(every)
        assert b.matching({**every, "y": False, "z": False}) == []


def test_backend_refuses_everything_when_it_cannot_recover(
    make: type[DurableBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make([EngineRule("x", X)])
    with monkeypatch.context() as m:
        m.setattr(engine, "complete_and_start_action", boom)
        m.setattr(engine, "create_ruleset", boom)
        with pytest.raises(BackendError):
            b.matching({"x": True})
    with pytest.raises(BackendError, match="unusable"):
        b.matching({"x": True})


def test_failed_build_releases_what_it_created(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[int] = []
    deleted: list[int] = []
    real_create, real_delete = engine.create_ruleset, engine.delete_ruleset

    def create(name: str, definition: str) -> int:
        if created:
            raise engine.error("injected failure")
        created.append(real_create(name, definition))
        return created[-1]

    def delete(handle: int) -> None:
        deleted.append(handle)
        real_delete(handle)

    monkeypatch.setattr(engine, "create_ruleset", create)
    monkeypatch.setattr(engine, "delete_ruleset", delete)
    names = [f"a{i}" for i in range(300)]  # two rulesets
    with pytest.raises(BackendError, match="injected failure"):
        DurableBackend([EngineRule(n, Atom(n)) for n in names])
    assert deleted == created != []


# ---- trap: ruleset names register once, rulesets are never freed ----


def test_identical_backends_side_by_side(make: type[DurableBackend]) -> None:
    rules = [EngineRule("x", X)]
    first, second = make(rules), make(rules)
    assert first.matching({"x": True}) == second.matching({"x": True}) == ["x"]
    first.close()
    assert second.matching({"x": True}) == ["x"]


def test_closed_backend_refuses() -> None:
    b = DurableBackend([EngineRule("x", X)])
    assert b.matching({"x": True}) == ["x"]
    b.close()
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.matching({"x": True})


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_thousand_backends_do_not_leak() -> None:
    # Each cycle builds 20 rules, evaluates and closes. Not freed, a cycle keeps ~570 KiB (the
    # ruleset and its session): ~560 MiB over the loop; freed, RSS grows by ~0.2 MiB. The bound,
    # 16 MiB, catches a leak of 16 KiB per backend and leaves room for the allocator's noise.
    rules = [EngineRule(f"r{i}", All((Atom(f"a{i}"), Not(Atom(f"a{i + 1}"))))) for i in range(20)]
    values = {f"a{i}": i % 2 == 0 for i in range(21)}

    def cycle() -> None:
        b = DurableBackend(rules)
        assert b.matching(values) == [f"r{i}" for i in range(0, 20, 2)]
        b.close()

    for _ in range(50):  # warm up the allocator
        cycle()
    before = rss_kib()
    for _ in range(1000):
        cycle()
    assert rss_kib() - before < 16 * 1024


# ---- trap: one engine per process, calls serialized ----


def test_concurrent_matching(make: type[DurableBackend]) -> None:
    rng = random.Random(4)
    names = ["a", "b", "c", "d", "e"]
    rules = [EngineRule(f"r{i}", random_expr(rng, names, 3)) for i in range(60)]
    b = make(rules)
    cases = list(assignments(names))
    barrier = threading.Barrier(4)
    failures: list[str] = []

    def worker(offset: int) -> None:
        barrier.wait()
        for i in range(400):
            values = cases[(offset * 8 + i) % len(cases)]
            try:
                got = b.matching(values)
            except BackendError as e:
                failures.append(repr(e))
                continue
            if got != expected(rules, values):
                failures.append(f"{values}: {got}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
