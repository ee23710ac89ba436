"""The proposal engine: every step of a proposal's life, each one atomic in the
store and then appended to the audit log.

submit → (duplicate | relief valve | proposed) → decide (policy + budgets) →
approved | escalated | rejected → (a human approves an escalation) → start →
running → finish → succeeded | failed | timed_out | killed. An emergency stop
suspends what is pending; start-up after a crash interrupts what was running.

Audit records are written after the transaction commits; a transition whose
record a crash kept from the log is found by `catch_up_audit` (the store marks
each transition once its record is written), so the log misses nothing.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from janus_policy import documents
from janus_policy.audit import AuditLogs
from janus_policy.errors import InputError
from janus_policy.policy.evaluate import Decision, PolicyEngine
from janus_policy.policy.live import LivePolicy
from janus_policy.policy.load import RISKS
from janus_policy.proposals.novelty import fingerprint
from janus_policy.proposals.states import PENDING, Conflict
from janus_policy.proposals.store import Record, Store, Tx

if TYPE_CHECKING:
    from janus_policy.config import AgentConfig

STATE_OF = {"approve": "approved", "escalate": "escalated", "deny": "rejected"}
#: How long a human approval stays usable when the rule does not say.
APPROVAL_TTL_S = 3600
ESCALATION_TTL_S = 86400


def operator() -> str:
    """Who is at the terminal, for the record."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def validate_proposal(proposal: Any, where: str = "<proposal>") -> dict[str, Any]:
    """The proposal, if it is valid against the proposal schema; else the
    first problem as an InputError naming the field."""
    doc = proposal if isinstance(proposal, documents.Document) else None
    doc = doc or documents.Document(where, proposal)
    errors = documents.validation_errors(doc, "proposal")
    if errors:
        raise errors[0]
    if not isinstance(doc.data, dict):  # pragma: no cover (the schema says object)
        raise InputError("E105", "a proposal is an object", doc.location(()))
    return doc.data


class Lifecycle:
    @classmethod
    def open(cls, config: AgentConfig) -> Lifecycle:
        """The store and audit logs of the configured state dir."""
        return cls(
            Store(config.harness.state_dir),
            AuditLogs.of(config),
            novelty_window_s=config.harness.novelty_window_s,
            max_pending=config.harness.max_pending,
            allowed_tools=config.auto_executor.allowed_tools,
            allowed_action_types=config.auto_executor.allowed_action_types,
        )

    def __init__(
        self,
        store: Store,
        audit: AuditLogs,
        *,
        novelty_window_s: float = 86400.0,
        max_pending: int = 1000,
        allowed_tools: Sequence[str] | None = None,
        allowed_action_types: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.novelty_window_s = novelty_window_s
        self.max_pending = max_pending
        #: agent.yaml's outer bound on auto-approval, over whatever the policy says.
        self.allowed = {"tool": allowed_tools, "action_type": allowed_action_types}

    # ---- arrival and decision ----

    def submit(
        self,
        proposal: Mapping[str, Any] | documents.Document,
        *,
        source: str,
        refuse: str | None = None,
    ) -> Record:
        """Records a proposal (validated first). A repeat within the novelty
        window, one arriving while too many are pending, or one the caller
        `refuse`s (with that reason) is recorded as rejected."""
        data = validate_proposal(proposal)
        fp = fingerprint(data)
        with self.store.write() as tx:
            original = tx.find_duplicate(fp, self.novelty_window_s)
            pending = tx.count(PENDING)
            if original:
                pid = tx.insert(
                    data,
                    source=source,
                    fingerprint=fp,
                    state="rejected",
                    reason=f"duplicate of {original}",
                    duplicate_of=original,
                )
            elif refuse is not None:
                pid = tx.insert(
                    data, source=source, fingerprint=fp, state="rejected", reason=refuse
                )
            elif pending >= self.max_pending:
                reason = f"relief_valve: {pending} proposals pending (bound {self.max_pending})"
                pid = tx.insert(
                    data, source=source, fingerprint=fp, state="rejected", reason=reason
                )
            else:
                pid = tx.insert(data, source=source, fingerprint=fp)
        self._audit(tx.transitions)
        return self.store.get(pid)

    def decide(
        self, proposal_id: str, engine: PolicyEngine | LivePolicy, *, mode: str | None = None
    ) -> Record:
        """Applies the policy (and the budgets of an approval) to a proposed
        proposal."""
        record = self.store.get(proposal_id)
        decision = engine.evaluate(record.proposal, mode=mode)
        with self.store.write() as tx:
            state, reason = self._judge(tx, record, decision)
            recorded = decision.to_dict()
            if state != STATE_OF[decision.decision]:
                # Approved by the policy, escalated here (a budget, the allowed
                # tools): the recorded decision says what stands, and why.
                recorded |= {
                    "decision": "escalate",
                    "reasons": [*recorded["reasons"], reason.split("; ")[0]],
                }
            fields: dict[str, Any] = {
                "decision": recorded,
                "policy_digest": decision.policy_digest,
            }
            if state == "escalated":
                esc = decision.escalation or {}
                fields |= {
                    "approvers": esc.get("approvers", "operators"),
                    "expires_at": tx.now + esc.get("expires_after_s", ESCALATION_TTL_S),
                    "on_expiry": esc.get("on_expiry", "deny"),
                }
            tx.move(proposal_id, "proposed", state, "policy", reason, **fields)
        self._audit(tx.transitions)
        return self.store.get(proposal_id)

    def _judge(self, tx: Tx, record: Record, decision: Decision) -> tuple[str, str]:
        """The state a decision leads to; an approval over a budget escalates
        (and an approval spends from every budget it falls under)."""
        state = STATE_OF[decision.decision]
        reason = "; ".join(decision.reasons)
        if state != "approved":
            return state, reason
        for key, allowed in self.allowed.items():
            if allowed is not None and record.proposal[key] not in allowed:
                return "escalated", (
                    f"{key} {record.proposal[key]!r} is not in auto_executor's allowed {key}s; "
                    f"{reason}"
                )
        points = RISKS.index(decision.effective_risk)
        spends = []
        for budget in decision.budgets:
            per = budget.get("per", "global")
            scope = "*" if per == "global" else str(record.proposal.get(per, "-"))
            approvals, spent = tx.spent(budget["rule"], scope, budget["window_s"])
            over = None
            if "max_approvals" in budget and approvals + 1 > budget["max_approvals"]:
                over = f"{approvals} of {budget['max_approvals']} approvals"
            if "max_risk_points" in budget and spent + points > budget["max_risk_points"]:
                over = f"{spent} + {points} of {budget['max_risk_points']} risk points"
            if over:
                where = "" if per == "global" else f" for {per} {scope}"
                return "escalated", (
                    f"budget {budget['rule']} exhausted{where}: {over} spent in the last "
                    f"{budget['window_s']} s; {reason}"
                )
            spends.append((budget["rule"], scope))
        for rule, scope in spends:
            tx.spend(rule, scope, points, record.id)
        return state, reason

    # ---- humans ----

    def approve(self, proposal_id: str, *, actor: str, note: str | None = None) -> Record:
        """A human approval. A proposal suspended before the policy decided it
        goes back to the policy instead: no human approval stands in for the
        guardrails."""
        record = self.store.get(proposal_id)
        if record.state == "suspended" and record.decision is None:
            with self.store.write() as tx:
                why = f"returned to the policy by {actor}: it was suspended before any decision"
                tx.move(record.id, "suspended", "proposed", actor, why)
            self._audit(tx.transitions)
            return self.store.get(record.id)
        with self.store.write() as tx:
            current = tx.get(record.id)  # as of now: a renewal may have come meanwhile
            waiting = current.state == "escalated"
            if waiting and current.expires_at is not None and current.expires_at < tx.now:
                raise Conflict(f"proposal {record.id}: its escalation expired; nothing done")
            esc = (record.decision or {}).get("escalation") or {}
            ttl = esc.get("approval_expires_after_s", APPROVAL_TTL_S)
            tx.move(
                record.id,
                ("escalated", "suspended"),
                "approved",
                actor,
                note,
                approved_by=actor,
                approval_note=note,
                approval_expires_at=tx.now + ttl,
            )
        self._audit(tx.transitions)
        return self.store.get(record.id)

    def reject(self, proposal_id: str, *, actor: str, reason: str) -> Record:
        record = self.store.get(proposal_id)
        with self.store.write() as tx:
            # Not an approved one: the daemon starts those at once; what is
            # approved is stopped by the emergency stop.
            waiting = ("proposed", "escalated", "suspended", "interrupted")
            tx.move(record.id, waiting, "rejected", actor, reason)
        self._audit(tx.transitions)
        return self.store.get(record.id)

    def requeue(self, proposal_id: str, *, actor: str, reason: str) -> Record:
        """An interrupted proposal back to approved, to run again."""
        record = self.store.get(proposal_id)
        with self.store.write() as tx:
            tx.move(record.id, "interrupted", "approved", actor, reason)
        self._audit(tx.transitions)
        return self.store.get(record.id)

    # ---- execution ----

    def start(self, proposal_id: str, *, actor: str = "auto_executor") -> Record | None:
        """approved → running, counting the execution; None when someone else
        started, suspended or rejected it first. An unused human approval past
        its expiry is rejected instead."""
        with self.store.write() as tx:
            record = tx.get(proposal_id)
            if record.state != "approved":
                return None
            if record.approval_expires_at is not None and record.approval_expires_at < tx.now:
                tx.move(record.id, "approved", "rejected", actor, "the human approval expired")
            else:
                tx.move(
                    record.id,
                    "approved",
                    "running",
                    actor,
                    executions=record.executions + 1,
                    started_at=tx.now,
                )
        self._audit(tx.transitions)
        after = self.store.get(proposal_id)
        return after if after.state == "running" else None

    def running_in(self, proposal_id: str, sandbox_pid: int) -> None:
        with self.store.write() as tx:
            tx.update(proposal_id, sandbox_pid=sandbox_pid)

    def finish(
        self, proposal_id: str, status: str, outcome: Mapping[str, Any] | None, error: str | None
    ) -> Record:
        with self.store.write() as tx:
            tx.move(
                proposal_id,
                "running",
                status,
                "tool_executor",
                error,
                outcome=dict(outcome) if outcome is not None else None,
                finished_at=tx.now,
                sandbox_pid=None,
            )
        self._audit(tx.transitions)
        return self.store.get(proposal_id)

    # ---- the harness ----

    def suspend_pending(self, *, actor: str, reason: str) -> list[Record]:
        """Every proposed, escalated and approved proposal → suspended, at
        once; the records as they were."""
        with self.store.write() as tx:
            victims = [tx.get(pid) for pid in tx.ids_in(PENDING)]
            for r in victims:
                tx.move(r.id, r.state, "suspended", actor, reason)
        self._audit(tx.transitions)
        return victims

    def recover(self, idempotent: Callable[[Mapping[str, Any]], bool]) -> list[Record]:
        """At start-up: what was running when the daemon died is interrupted;
        those `idempotent` says may run again (by the proposal) are queued again."""
        found = self.store.proposals(states=("running",), newest_first=False)
        if not found:
            return []
        with self.store.write() as tx:
            for r in found:
                tx.move(
                    r.id,
                    "running",
                    "interrupted",
                    "daemon",
                    "the daemon stopped during this execution",
                    sandbox_pid=None,
                )
                if idempotent(r.proposal):
                    tx.move(
                        r.id,
                        "interrupted",
                        "approved",
                        "daemon",
                        f"requeued: {r.tool} is idempotent for this proposal",
                    )
        self._audit(tx.transitions)
        return [self.store.get(r.id) for r in found]

    def expire(self) -> list[Record]:
        """Escalations past their expiry resolve as their rule says (rejected,
        or renewed for another period); unused human approvals past theirs are
        rejected."""
        now_ids = self.store.ids("escalated", before=time.time(), column="expires_at")
        stale = self.store.ids("approved", before=time.time(), column="approval_expires_at")
        if not now_ids and not stale:
            return []
        changed = []
        renewed: list[tuple[str, str | None, float]] = []
        with self.store.write() as tx:
            for pid in now_ids:
                r = tx.get(pid)
                if r.state != "escalated":
                    continue
                changed.append(pid)
                if r.on_expiry == "escalate":
                    period = (
                        (r.decision or {})
                        .get("escalation", {})
                        .get("expires_after_s", ESCALATION_TTL_S)
                    )
                    tx.update(pid, expires_at=tx.now + period)
                    renewed.append((pid, r.policy_digest, tx.now + period))
                else:
                    tx.move(
                        pid,
                        "escalated",
                        "rejected",
                        "daemon",
                        f"escalation to {r.approvers} expired unanswered",
                    )
            for pid in stale:
                if tx.get(pid).state == "approved":
                    changed.append(pid)
                    tx.move(pid, "approved", "rejected", "daemon", "the human approval expired")
        self._audit(tx.transitions)
        for pid, digest, until in renewed:  # no state changes: recorded here
            entry = {"proposal_id": pid, "policy_digest": digest, "expires_at": until}
            self.audit.decisions.append("escalation_renewed", entry)
        return [self.store.get(p) for p in changed]

    # ---- the audit log ----

    def _audit(self, seqs: Sequence[int] | None, *, older_than_s: float = 0.0) -> int:
        """Appends these transitions (or every one still missing, if at least
        `older_than_s` old) to the audit log, each marked in the store as soon
        as it is written; how many."""
        if seqs is not None and not seqs:
            return 0
        before = time.time() - older_than_s if seqs is None else None
        missing = self.store.unaudited(seqs, before=before)
        for t in missing:
            record = self.store.get(t.proposal_id)
            entry: dict[str, Any] = {
                "proposal_id": t.proposal_id,
                "policy_digest": record.policy_digest,
                "transition": t.seq,
                "from": t.from_state,
                "to": t.to_state,
                "actor": t.actor,
                "reason": t.reason,
            }
            if seqs is None:
                entry["recovered"] = True
            if t.from_state is None:
                # The submission: what was proposed, whatever becomes of it.
                entry["proposal"] = record.proposal
            if (
                t.from_state == "proposed"
                and record.decision is not None
                and (t.to_state in STATE_OF.values())
            ):
                # A policy decision (not a duplicate or the relief valve).
                entry |= {"proposal": record.proposal, "decision": record.decision}
                self.audit.decisions.append("decision", entry)
            else:
                self.audit.decisions.append("transition", entry)
            if t.to_state == "running" or t.from_state == "running":
                self.audit.tool_use.append(
                    "execution_started" if t.to_state == "running" else "execution_finished",
                    {**entry, "tool": record.tool, "outcome": record.outcome}
                    if t.from_state == "running"
                    else {**entry, "tool": record.tool, "proposal": record.proposal},
                )
            self.store.mark_audited([t.seq])
        return len(missing)

    def catch_up_audit(self, *, older_than_s: float = 0.0) -> int:
        """Writes the records a crash kept from the audit log (transitions
        committed at least `older_than_s` ago, so that a command still between
        its commit and its append is left alone); how many."""
        return self._audit(None, older_than_s=older_than_s)
