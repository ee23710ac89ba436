"""Evaluating a proposal: validate → unwrap its command → one fact per argv →
the rules engine says which rules match → combine.

Combination: per fact, the strictest decision of its matching rules (deny >
escalate > approve), or the policy default when none decides; overall, the
strictest over all facts, so a command hiding a second command is judged by
the worse of the two. The effective risk is the highest of the declared risk
and every matching classification; approval also needs effective risk ≤ the
auto-approval maximum; in mode alpha every approve becomes escalate. Anything
unexpected yields deny with the error recorded (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from janus_policy import documents
from janus_policy.policy.backend import DurableBackend
from janus_policy.policy.command import parse_command
from janus_policy.policy.compile import CompiledPolicy, compile_policy
from janus_policy.policy.load import DECISIONS, RISKS, Policy

NUMERIC_LIMITS = ("cpu_percent", "memory_mb", "disk_mb", "timeout_s")


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
        self._backend = DurableBackend(self.compiled.rules)

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
        facts: list[dict[str, Any]]
        if "command" in proposal:
            cmd = parse_command(proposal["command"])
            if cmd.opaque is not None:
                return self._deny(f"command cannot be judged: {cmd.opaque}", start)
            facts = [{**proposal, "argv": argv} for argv in cmd.argvs]
        else:
            facts = [{**proposal, "argv": None}]

        by_id = self.compiled.by_id
        matched_ids: list[str] = []
        per_fact: list[str] = []
        for fact in facts:
            values = self.compiled.atom_values(fact)
            hits = self._backend.matching(values)
            decided = [d for d in (by_id[h].decision for h in hits) if d]
            per_fact.append(_strictest(decided) if decided else self.policy.default)
            matched_ids.extend(h for h in hits if h not in matched_ids)
        hit = [by_id[i] for i in matched_ids]
        # Budget-only rules take no part in the decision; they show under `budgets`.
        rules = [r for r in hit if r.decision or r.classify_risk]
        decision = _strictest(per_fact)
        reasons = [f"{r.id}: {r.reason}" if r.reason else r.id for r in rules]
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
            budgets=tuple({"rule": r.id, "per": "global", **r.budget} for r in hit if r.budget)
            if decision == "approve"
            else (),
        )

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
