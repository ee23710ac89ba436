"""Evaluating a proposal: validate (the proposal schema, then its tool's spec) → judge its
command by the catalogue, or its tool's path args → one fact per program it runs → the rules
engine says which rules match → combine.

Combination: per fact, the strictest decision of its matching rules (deny >
escalate > approve), or the policy default when none decides; overall, the
strictest over all facts, so a command hiding a second command is judged by
the worse of the two. The effective risk is the highest of the declared risk
and every matching classification; approval also needs effective risk ≤ the
auto-approval maximum; in mode beta it also needs an action that is read-only, idempotent and
reversible (the tool's spec says, and for a command the catalogue, program by program); in mode
alpha every approve becomes escalate. A command the model cannot see through is denied. An
approving rule may carve an exception out of escalate rules (`overrides`): where it matches, they
take no part. Anything unexpected, or an evaluation over its time budget, yields deny with the
error recorded (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from janus_policy import documents
from janus_policy.errors import InputError
from janus_policy.policy.backend import BackendError, DurableBackend
from janus_policy.policy.command import Call, parse_command
from janus_policy.policy.compile import CompiledPolicy, compile_policy
from janus_policy.policy.load import DECISIONS, RISKS, Policy, PolicyError, Rule
from janus_policy.policy.paths import resolve
from janus_policy.policy.tool_specs import BUILTIN_TOOLS, ToolSpec

NUMERIC_LIMITS = ("cpu_percent", "memory_mb", "disk_mb", "timeout_s")
#: Judged commands an engine keeps.
JUDGED_COMMANDS = 4096


@dataclass(frozen=True)
class Settings:
    """What agent.yaml bounds: the mode, the auto-approval ceiling, the maxima."""

    mode: str = "beta"
    max_risk: str = "low"
    limits: Mapping[str, Any] = field(
        default_factory=lambda: {
            "cpu_percent": 80,
            "memory_mb": 2048,
            "disk_mb": 100,
            "timeout_s": 600,
            "network": False,
        }
    )
    #: The tools proposals may name, with what the policy must know of each.
    tools: Mapping[str, ToolSpec] = field(default_factory=lambda: dict(BUILTIN_TOOLS))
    #: Time one decision may take; past it the decision is deny (fail closed).
    budget_s: float = 1.0


@dataclass(frozen=True)
class MatchedRule:
    id: str
    ruleset: str
    path: str
    line: int
    decision: str | None
    classify_risk: str | None


@dataclass(frozen=True)
class Decision:
    decision: str
    effective_risk: str
    matched: tuple[MatchedRule, ...]
    reasons: tuple[str, ...]
    limits: Mapping[str, Any]
    escalation: Mapping[str, Any] | None
    policy_digest: str
    eval_us: float
    error: str | None = None
    #: The budgets an approval spends from: {"rule", "window_s", "max_approvals" |
    #: "max_risk_points", "per"}. The proposal store enforces them, since only it
    #: knows what was spent.
    budgets: tuple[Mapping[str, Any], ...] = ()

    @property
    def matched_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.matched)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matched"] = [asdict(m) for m in self.matched]
        d["limits"] = dict(self.limits)
        d["budgets"] = [dict(b) for b in self.budgets]
        return d


def _strictest(decisions: list[str]) -> str:
    return max(decisions, key=DECISIONS.index)


class PolicyEngine:
    """One compiled policy bound to the rules engine. Thread-safe."""

    def __init__(self, policy: Policy, settings: Settings | None = None) -> None:
        self.policy = policy
        self.settings = settings or Settings()
        self.compiled: CompiledPolicy = compile_policy(policy)
        # A judged command is a pure function of the command and the policy's catalogue, and
        # agents repeat themselves (so do recorded proposals under simulate).
        self._judge = lru_cache(maxsize=JUDGED_COMMANDS)(
            lambda command: parse_command(command, policy.catalogue)
        )
        try:
            self._backend = DurableBackend(self.compiled.rules)
        except BackendError as e:
            rule = self.compiled.by_id.get(e.rule_id or "")
            where = rule.location if rule else None
            raise PolicyError(
                [InputError("P108", str(e), where, f"rules.{e.rule_id}" if rule else "")]
            ) from None

    def close(self) -> None:
        self._backend.close()

    def evaluate(self, proposal: Mapping[str, Any], *, mode: str | None = None) -> Decision:
        start = time.perf_counter()
        try:
            return self._evaluate(proposal, mode or self.settings.mode, start)
        except Exception as e:  # fail closed: never an exception out, never an approve
            return self._deny(f"evaluation error: {type(e).__name__}: {e}", start, error=True)

    def _deny(self, reason: str, start: float, *, error: bool = False) -> Decision:
        return Decision(
            decision="deny",
            effective_risk="critical" if error else "high",
            matched=(),
            reasons=(reason,),
            limits={},
            escalation=None,
            policy_digest=self.policy.digest,
            eval_us=(time.perf_counter() - start) * 1e6,
            error=reason if error else None,
        )

    def _evaluate(self, proposal: Mapping[str, Any], mode: str, start: float) -> Decision:
        if not documents.is_valid("proposal", proposal):
            doc = documents.Document("<proposal>", dict(proposal))
            problem = documents.validation_errors(doc, "proposal")[0]
            return self._deny(
                f"invalid proposal: {problem.field}: {problem.message}", start, error=True
            )
        tool = self.settings.tools.get(proposal["tool"])
        invalid = _tool_problem(tool, proposal)
        if invalid is not None:
            return self._deny(f"invalid proposal: {invalid}", start, error=True)
        facts = self._facts(proposal, tool)
        if isinstance(facts, str):
            return self._deny(facts, start)
        deadline = start + self.settings.budget_s
        by_id = self.compiled.by_id
        rules: list[Rule] = []
        overridden: list[tuple[Rule, Rule]] = []
        per_fact: list[str] = []
        for fact in facts:
            hits = [by_id[h] for h in self._backend.matching(self.compiled.atom_values(fact))]
            if self.compiled.has_exceptions:
                hits = _carve(hits, overridden)
            decided = [r.decision for r in hits if r.decision]
            per_fact.append(_strictest(decided) if decided else self.policy.default)
            rules.extend(r for r in hits if r not in rules)
            if time.perf_counter() > deadline:
                return self._deny(
                    f"evaluation over its time budget of {self.settings.budget_s:g} s",
                    start,
                    error=True,
                )
        # Budget-only rules take no part in the decision; they show under `budgets`.
        budgeted = [r for r in rules if r.budget]
        rules = [r for r in rules if r.decision or r.classify_risk]
        decision = _strictest(per_fact)
        # The rules that decided come first: they say why.
        rules.sort(key=lambda r: -DECISIONS.index(r.decision) if r.decision == decision else 1)
        reasons = [f"{r.id}: {r.reason}" if r.reason else r.id for r in rules]
        reasons += [
            f"{x.id} overrides {r.id} here (an exception)" for r, x in dict.fromkeys(overridden)
        ]
        if not any(r.decision for r in rules):
            reasons.append(f"no rule decided: policy default {self.policy.default}")

        risks = [proposal["risk"], *(r.classify_risk for r in rules if r.classify_risk)]
        effective = max(risks, key=RISKS.index)
        if decision == "approve" and RISKS.index(effective) > RISKS.index(self.settings.max_risk):
            decision = "escalate"
            reasons.append(
                f"effective risk {effective} is above the auto-approval maximum "
                f"{self.settings.max_risk}"
            )
        if decision == "approve" and mode == "beta":
            unsafe = _not_automatable(tool, [f.get("call") for f in facts])
            if unsafe:
                decision = "escalate"
                reasons.append(
                    "auto-execution needs an action that is read-only, idempotent and "
                    f"reversible: {unsafe}"
                )
        if decision == "approve" and mode == "alpha":
            decision = "escalate"
            reasons.append("mode alpha: every approval is a human's")

        escalation = None
        if decision == "escalate":
            escalation = next((r.escalation for r in rules if r.escalation), None) or {
                "approvers": "operators"
            }
            escalation = {"expires_after_s": 86400, "on_expiry": "deny", **escalation}
        return Decision(
            decision=decision,
            effective_risk=effective,
            matched=tuple(
                MatchedRule(
                    r.id, r.ruleset, r.location.path, r.location.line, r.decision, r.classify_risk
                )
                for r in rules
            ),
            reasons=tuple(reasons),
            # An escalation carries them too: a human approval runs under them.
            limits=self._limits(rules) if decision != "deny" else {},
            escalation=escalation,
            policy_digest=self.policy.digest,
            eval_us=(time.perf_counter() - start) * 1e6,
            budgets=tuple({"rule": r.id, "per": "global", **(r.budget or {})} for r in budgeted)
            if decision == "approve"
            else (),
        )

    def _facts(
        self, proposal: Mapping[str, Any], tool: ToolSpec | None
    ) -> list[dict[str, Any]] | str:
        """A fact per program the command runs (with its Call), or one for what the tool's args
        do; or why the command cannot be judged."""
        if "command" not in proposal:
            return [{**proposal, "call": _args_call(tool, proposal) if tool else None}]
        command = proposal["command"]
        judged = self._judge(command if isinstance(command, str) else tuple(command))
        if judged.opaque is not None:
            return f"command cannot be judged: {judged.opaque}"
        return [{**proposal, "call": call} for call in judged.calls]

    def _limits(self, rules: list[Any]) -> dict[str, Any]:
        """The global maxima intersected with every matching rule's limits:
        the smallest number, network only if all allow it, and the writable
        paths every rule allows."""
        out: dict[str, Any] = dict(self.settings.limits)
        for r in rules:
            for k in NUMERIC_LIMITS:
                if k in r.limits:
                    out[k] = min(out.get(k, r.limits[k]), r.limits[k])
            if "network" in r.limits:
                out["network"] = bool(out.get("network", True)) and r.limits["network"]
            if "writable_paths" in r.limits:
                prev = out.get("writable_paths")
                allowed = list(r.limits["writable_paths"])
                out["writable_paths"] = (
                    allowed if prev is None else [p for p in prev if p in allowed]
                )
        return out


def _carve(hits: list[Rule], overridden: list[tuple[Rule, Rule]]) -> list[Rule]:
    """The hits of one fact without the escalate rules a matching exception overrides."""
    carved = {o: r for r in hits if r.decision == "approve" for o in r.overrides}
    kept = []
    for r in hits:
        if r.id in carved and r.decision == "escalate":
            overridden.append((r, carved[r.id]))
        else:
            kept.append(r)
    return kept


def _tool_problem(tool: ToolSpec | None, proposal: Mapping[str, Any]) -> str | None:
    """What makes the proposal invalid for its tool (a tool without a spec is left to the rules:
    nothing about it can be approved automatically)."""
    if tool is None:
        return None
    if "command" in proposal and not tool.takes_command:
        return f"command: the {tool.name} tool takes args, not a command"
    if tool.takes_command and "command" not in proposal:
        return f"command: the {tool.name} tool needs a command"
    problem = tool.args_problem(proposal.get("args", {}))
    return None if problem is None else f"{problem[0]}: {problem[1]}"


def _args_call(tool: ToolSpec, proposal: Mapping[str, Any]) -> Call:
    """What a tool that takes args does, as a policy's `command` tests see it: the paths in its
    args, read or written."""
    args = proposal.get("args", {})
    reads = tuple(
        resolve(args[a]) for a, kind in tool.path_args.items() if kind == "read" and a in args
    )
    writes = tuple(
        resolve(args[a]) for a, kind in tool.path_args.items() if kind == "write" and a in args
    )
    effects = frozenset(e for e, paths in (("reads", reads), ("writes", writes)) if paths)
    return Call((), "", None, True, False, frozenset(), None, reads, writes, effects)


def _not_automatable(tool: ToolSpec | None, calls: list[Call | None]) -> str:
    """Why the action may not run without a human in mode beta ("" when it may)."""
    if tool is None:
        return "the tool is not one the policy knows"
    if not tool.safe_to_automate:
        missing = [
            word
            for word, holds in (
                ("read-only", tool.read_only),
                ("idempotent", tool.idempotent),
                ("reversible", tool.reversible),
            )
            if not holds
        ]
        return f"the {tool.name} tool is not {' or '.join(missing)}"
    if tool.takes_command:
        for call in calls:
            if call is not None and not call.read_only:
                what = sorted(call.effects & {"writes", "executes", "network"}) or [
                    "unknown effects"
                ]
                return f"{' '.join(call.argv)[:80]!r} {'/'.join(what)}"
    return ""
