"""Policy evaluation, per decision, in one run.

  default    `PolicyEngine.evaluate` on the bundled policies (policies/), on a mix
             of proposals (approved, escalated, denied, opaque); the engine keeps
             the commands it judged, so these repeats are not judged again
  fresh      the same mix with a command never seen before each time (its
             paths numbered): every command is read, parsed and resolved
  synth-500  `evaluate` on a synthetic policy of 500 rules (`tool` equals tN),
             proposals hitting rule 0..499 round-robin
  floor-500  the raw durable_rules floor for the same 500 conditions: a
             hand-written ruleset (`m.tool == "tN"`), assert + retract of the
             same facts, nothing else
  cedar-500  the same 500 conditions as Cedar `forbid … when { context.tool ==
             "tN" }` policies, parsed once into a PolicySet (cedarpy)
  rego-500   the same as Rego rules (`deny contains "rN" if { input.tool ==
             "tN" }`) queried through regopy, fewer iterations (it is slow)
  big-10000  a policy of 10,000 rules of every kind (field tests, regular
             expressions, command tests by program, option and path): the time
             to load it, to check it (`janus-policy check`: lint and inline
             tests, on the loaded policy), to build its engine and make a first
             decision (target: the three <= 10 s), and its p50 per decision

Reported: decisions per second, p50 and p99 latency, and the ratio of
synth-500 to floor-500 (our overhead over the raw engine; target ≤ 1.5) and
the p50 on the default policies (target ≤ 100 µs). The ratio can be below 1:
durable_rules tries each of the floor's 500 tests of `tool` on every assert,
while the back end gives each atom a field of its own, spreads them over
rulesets the engine can walk (8 here) and asserts a fact only to those where
an atom is true.

    python bench/policy_eval.py [--iterations N] [--format text|json]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from durable import lang
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.lint import lint_policy
from janus_policy.policy.load import load_policy

ROOT = Path(__file__).resolve().parent.parent
N_RULES = 500

DEFAULT_MIX: list[dict[str, Any]] = [
    {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -la src"},
    {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "git log -n 5"},
    {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "rm -rf /"},
    {
        "tool": "file_chunker",
        "action_type": "process_chunk",
        "risk": "low",
        "args": {"path": "/srv/docs/guide.md", "segment": 0},
    },
    {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "cat $(ls)"},
    {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "cat a.csv | wc -l"},
]
N_BIG = 10_000


def synthetic_policy(dir_: Path) -> Path:
    rules = [
        {"id": f"r{i}", "when": {"field": "tool", "equals": f"t{i}"}, "decision": "escalate"}
        for i in range(N_RULES)
    ]
    (dir_ / "synth.yaml").write_text(yaml.safe_dump({"ruleset": "synth", "rules": rules}))
    return dir_


def big_policy(dir_: Path) -> Path:
    """N_BIG rules of every kind over 10 rule sets, each with an inline test."""
    for f in range(10):
        rules: list[dict[str, Any]] = []
        for i in range(f * N_BIG // 10, (f + 1) * N_BIG // 10):
            kind = i % 4
            if kind == 0:
                when: dict[str, Any] = {"field": "tool", "equals": f"t{i}"}
            elif kind == 1:
                when = {"field": "rationale", "matches": f".*ticket-{i}\\b.*"}
            elif kind == 2:
                when = {"command": {"programs": [f"p{i}"], "options": ["-x"]}}
            else:
                when = {
                    "all": [
                        {"field": "action_type", "equals": f"a{i}"},
                        {"command": {"known": True, "reads": [f"d{i}/**"], "writes": "none"}},
                    ]
                }
            rules.append({"id": f"r{i}", "when": when, "decision": "escalate"})
        test = {
            "name": "an unrelated proposal takes the default",
            "proposal": {
                "tool": "shell",
                "action_type": "analysis",
                "risk": "low",
                "command": "ls",
            },
            "expect": "escalate",
        }
        doc = {"ruleset": f"big{f}", "rules": rules, "tests": [test]}
        (dir_ / f"big{f}.yaml").write_text(yaml.safe_dump(doc))
    return dir_


def big() -> tuple[dict[str, float], Callable[[int], None]]:
    """Seconds to load, check, and build + first decision on the N_BIG-rule policy."""
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        path = big_policy(Path(d))
        t = time.perf_counter()
        policy = load_policy(path)
        seconds["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        findings = lint_policy(policy)
        seconds["check_s"] = time.perf_counter() - t
        if findings:
            raise SystemExit(f"policy_eval: the big policy has findings: {findings[0]}")
        t = time.perf_counter()
        engine = PolicyEngine(policy)
        engine.evaluate(DEFAULT_MIX[0])
        seconds["first_decision_s"] = time.perf_counter() - t
    mix = [
        {"tool": f"t{i * 4}", "action_type": "analysis", "risk": "low"} for i in range(10)
    ] + DEFAULT_MIX

    def run(i: int) -> None:
        engine.evaluate(mix[i % len(mix)])

    return seconds, run


def floor() -> Callable[[int], None]:
    """The same 500 conditions, written directly against durable_rules."""
    name = f"floor{time.monotonic_ns()}"
    hits: list[int] = []
    with lang.ruleset(name):
        for i in range(N_RULES):

            def action(_c: Any, i: int = i) -> None:
                hits.append(i)

            lang.when_all(lang.m.tool == f"t{i}")(action)
    keys = itertools.count()

    def run(i: int) -> None:
        fact = {"k": next(keys), "tool": f"t{i % N_RULES}"}
        lang.assert_fact(name, fact)
        lang.retract_fact(name, fact)

    return run


def cedar() -> Callable[[int], None]:
    import cedarpy  # noqa: PLC0415 (bench extra)

    text = "\n".join(
        f'forbid(principal, action, resource) when {{ context.tool == "t{i}" }};'
        for i in range(N_RULES)
    )
    policies = cedarpy.PolicySet.from_str(text + "\npermit(principal, action, resource);")
    entities = cedarpy.Entities.from_json_str("[]")

    def run(i: int) -> None:
        request = {
            "principal": 'Agent::"agent"',
            "action": 'Action::"propose"',
            "resource": 'Tool::"shell"',
            "context": {"tool": f"t{i % N_RULES}"},
        }
        cedarpy.is_authorized(request, policies, entities)

    return run


def rego() -> Callable[[int], None]:
    import regopy  # noqa: PLC0415 (bench extra)

    interpreter = regopy.Interpreter()
    rules = "\n".join(f'deny contains "r{i}" if {{ input.tool == "t{i}" }}' for i in range(N_RULES))
    interpreter.add_module("janus", "package janus\n" + rules)

    def run(i: int) -> None:
        interpreter.set_input_term(json.dumps({"tool": f"t{i % N_RULES}"}))
        interpreter.query("data.janus.deny")

    return run


def floor_samples(n: int) -> list[float]:
    """The floor, measured in a process of its own: durable.lang's host polls its rulesets from
    timer threads that keep running, unlocked, in the one C extension our engine calls too (the
    back end never uses durable.lang for that reason); in the same process they crash it."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure_floor, (n,))


def _measure_floor(n: int) -> list[float]:
    return measure(floor(), n)


def measure(fn: Callable[[int], None], n: int) -> list[float]:
    for i in range(min(200, n)):
        fn(i)
    gc.collect()
    gc.disable()
    try:
        out = []
        for i in range(n):
            t = time.perf_counter_ns()
            fn(i)
            out.append((time.perf_counter_ns() - t) / 1000)
        return out
    finally:
        gc.enable()


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {
        "per_s": 1e6 / statistics.fmean(samples),
        "p50_us": statistics.median(samples),
        "p99_us": q[98],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--format", choices=("text", "json"), default="text")
    args = ap.parse_args()

    default = PolicyEngine(load_policy(ROOT / "policies"))
    with tempfile.TemporaryDirectory() as d:
        synth = PolicyEngine(load_policy(synthetic_policy(Path(d))))
    base = {"action_type": "analysis", "risk": "low"}

    def on_default(i: int) -> None:
        default.evaluate(DEFAULT_MIX[i % len(DEFAULT_MIX)])

    def on_fresh(i: int) -> None:
        p = DEFAULT_MIX[i % len(DEFAULT_MIX)]
        if "command" in p:
            p = {
                **p,
                "command": p["command"].replace(" src", f" src{i}").replace("a.csv", f"{i}.csv"),
            }
        default.evaluate(p)

    def on_synth(i: int) -> None:
        synth.evaluate({**base, "tool": f"t{i % N_RULES}"})

    big_seconds, on_big = big()
    variants: dict[str, Callable[[int], None]] = {
        "default": on_default,
        "fresh": on_fresh,
        "synth-500": on_synth,
        "big-10000": on_big,
    }
    try:
        variants["cedar-500"] = cedar()
        variants["rego-500"] = rego()
    except ImportError as e:
        print(f"policy_eval: {e.name} is not installed (pip install .[bench]); skipping it")
    slow = {"rego-500"}
    results = {
        k: summary(measure(fn, args.iterations // 20 if k in slow else args.iterations))
        for k, fn in variants.items()
    }
    results["floor-500"] = summary(floor_samples(args.iterations))
    ratio = results["synth-500"]["p50_us"] / results["floor-500"]["p50_us"]
    report = {
        "iterations": args.iterations,
        "results": results,
        "overhead_vs_floor_p50": ratio,
        "big_10000": big_seconds,
        "targets": {"default_p50_us": 100, "overhead_vs_floor": 1.5, "big_10000_s": 10},
    }
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    print(f"policy_eval: {args.iterations} evaluations per variant, one run")
    print(f"{'variant':<12}{'per s':>12}{'p50 µs':>10}{'p99 µs':>10}")
    for k, r in results.items():
        print(f"{k:<12}{r['per_s']:>12.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")
    p50 = results["default"]["p50_us"]
    print(f"\ndefault p50 = {p50:.1f} µs   target <= 100 µs   {'PASS' if p50 <= 100 else 'MISS'}")
    for other in ("cedar-500", "rego-500"):
        if other in results:
            speedup = results[other]["p50_us"] / results["synth-500"]["p50_us"]
            print(f"{other} / synth-500 (p50) = {speedup:.1f}   (how much slower that engine is)")
    verdict = "PASS" if ratio <= 1.5 else "MISS"
    print(f"synth-500 / floor-500 (p50) = {ratio:.2f}   target <= 1.5   {verdict}")
    total = sum(big_seconds.values())
    print(
        f"big-10000: load {big_seconds['load_s']:.2f} s, check {big_seconds['check_s']:.2f} s, "
        f"engine + first decision {big_seconds['first_decision_s']:.2f} s = {total:.2f} s   "
        f"target <= 10 s   {'PASS' if total <= 10 else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
