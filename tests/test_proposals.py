"""The proposal store and lifecycle on a real SQLite file, the real policy
engine and the real audit log: states, novelty, the relief valve, budgets,
expiry, crash recovery, races between processes, damaged databases."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from janus_policy import audit
from janus_policy.audit import AuditLogs
from janus_policy.errors import InputError
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.novelty import fingerprint
from janus_policy.proposals.states import TRANSITIONS, Conflict, IllegalTransition
from janus_policy.proposals.store import Store, StoreError

LS = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -la"}
GIT = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "git log"}
RM = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "rm -rf /"}


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(BUNDLED_POLICIES))
    yield e
    e.close()


def open_lifecycle(state: Path, **kw: Any) -> Lifecycle:
    return Lifecycle(Store(state), AuditLogs(state, fsync=False), **kw)


@pytest.fixture
def lc(tmp_path: Path) -> Lifecycle:
    return open_lifecycle(tmp_path)


def variant(n: int, **extra: Any) -> dict[str, Any]:
    return {**LS, "command": f"ls -la dir{n}", **extra}


def test_states_and_records(lc: Lifecycle, engine: PolicyEngine, tmp_path: Path) -> None:
    approved = lc.decide(lc.submit(LS, source="t").id, engine)
    escalated = lc.decide(lc.submit(GIT, source="t").id, engine)
    denied = lc.decide(lc.submit(RM, source="t").id, engine)
    assert (approved.state, escalated.state, denied.state) == ("approved", "escalated", "rejected")
    assert approved.decision
    assert approved.decision["limits"]["timeout_s"] == 60
    assert escalated.approvers == "operators"
    assert escalated.on_expiry == "deny"
    assert escalated.expires_at
    assert escalated.expires_at > escalated.created_at
    assert "deny-recursive-delete" in (denied.reason or "")
    assert [t.to_state for t in lc.store.transitions(approved.id)] == ["proposed", "approved"]
    # Every transition is in the audit log, the decisions with their proposal.
    records = [r for _, r in audit.read_records(tmp_path / "decisions.jsonl")]
    assert len(records) == 6
    decisions = [r for r in records if r["kind"] == "decision"]
    assert {r["proposal_id"] for r in decisions} == {approved.id, escalated.id, denied.id}
    assert all(r["proposal"]["tool"] == "shell" for r in decisions)
    assert audit.verify(tmp_path / "decisions.jsonl").ok


def test_invalid_proposals_are_refused_with_the_field(lc: Lifecycle) -> None:
    with pytest.raises(InputError) as e:
        lc.submit({**LS, "risk": "tiny"}, source="t")
    assert e.value.field == "risk"
    with pytest.raises(InputError) as e:
        lc.submit({**LS, "sudo": True}, source="t")
    assert "sudo" in str(e.value)
    assert lc.store.proposals() == []


def test_duplicates_point_at_the_original(lc: Lifecycle) -> None:
    first = lc.submit(LS, source="t")
    # The same action, written differently, wrapped in sh -c, with other words.
    again = lc.submit(
        {**LS, "command": "sh -c 'ls   -la'", "rationale": "once more", "risk": "none"},
        source="t",
    )
    assert again.state == "rejected"
    assert again.duplicate_of == first.id
    assert again.reason == f"duplicate of {first.id}"
    # A third copy still points at the first, not at the duplicate.
    assert lc.submit(LS, source="t").duplicate_of == first.id
    assert lc.submit(variant(1), source="t").state == "proposed"


def test_novelty_window(tmp_path: Path) -> None:
    lc = open_lifecycle(tmp_path, novelty_window_s=0.000001)
    lc.submit(LS, source="t")
    assert lc.submit(LS, source="t").state == "proposed"


def test_fingerprint_ignores_wording_not_content() -> None:
    assert fingerprint(LS) == fingerprint({**LS, "rationale": "x", "mission": "m"})
    assert fingerprint(LS) != fingerprint({**LS, "command": "ls -l"})
    assert fingerprint(LS) != fingerprint({**LS, "action_type": "process_chunk"})
    assert fingerprint({**LS, "args": {"a": 1}}) != fingerprint({**LS, "args": {"a": 2}})


def test_relief_valve(tmp_path: Path) -> None:
    lc = open_lifecycle(tmp_path, max_pending=2)
    assert lc.submit(variant(1), source="t").state == "proposed"
    assert lc.submit(variant(2), source="t").state == "proposed"
    shed = lc.submit(variant(3), source="t")
    assert shed.state == "rejected"
    assert shed.reason
    assert shed.reason.startswith("relief_valve")
    assert lc.store.shed() == 1
    # Shed, it is no original: once there is room, the same action is new.
    lc.max_pending = 10
    again = lc.submit(variant(3), source="t")
    assert again.state == "proposed"
    assert again.duplicate_of is None


BUDGET_POLICY = """
ruleset: budgeted
default: escalate
rules:
  - id: approve-ls
    when: {command: {argv: [ls]}}
    decision: approve
  - id: two-per-mission
    when: {field: tool, equals: shell}
    budget: {window_s: 3600, max_approvals: 2, per: mission}
  - id: risk-points
    when: {field: tool, equals: shell}
    budget: {window_s: 3600, max_risk_points: 3}
"""


def test_budgets_escalate_what_is_over(tmp_path: Path) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "b.yaml").write_text(BUDGET_POLICY)
    engine = PolicyEngine(load_policy(tmp_path / "policy"))
    lc = open_lifecycle(tmp_path / "state")
    try:
        states = [
            lc.decide(lc.submit(variant(i, mission="m1"), source="t").id, engine) for i in range(3)
        ]
        assert [r.state for r in states] == ["approved", "approved", "escalated"]
        assert "budget two-per-mission exhausted for mission m1" in (states[2].reason or "")
        # The record says what stands: escalate, and why, with the limits a
        # human approval will run under.
        recorded = states[2].decision
        assert recorded is not None
        assert recorded["decision"] == "escalate"
        assert recorded["reasons"][-1].startswith("budget two-per-mission exhausted")
        assert recorded["limits"]["timeout_s"] == 600
        # Another mission has its own approvals budget, but the global risk
        # points (low = 1 each, 3 at most) run out after one more.
        other = [
            lc.decide(lc.submit(variant(10 + i, mission="m2"), source="t").id, engine)
            for i in range(2)
        ]
        assert [r.state for r in other] == ["approved", "escalated"]
        assert "budget risk-points exhausted" in (other[1].reason or "")
    finally:
        engine.close()


def test_a_human_approves_and_rejects(lc: Lifecycle, engine: PolicyEngine) -> None:
    esc = lc.decide(lc.submit(GIT, source="t").id, engine)
    ok = lc.approve(esc.id[:12], actor="alice", note="read-only")
    assert (ok.state, ok.approved_by, ok.approval_note) == ("approved", "alice", "read-only")
    assert ok.approval_expires_at
    assert ok.approval_expires_at > ok.updated_at - 1
    with pytest.raises(Conflict, match="is approved now"):
        lc.approve(esc.id, actor="bob")
    other = lc.decide(lc.submit({**GIT, "command": "git status"}, source="t").id, engine)
    assert lc.reject(other.id, actor="bob", reason="not now").state == "rejected"
    with pytest.raises(Conflict):
        lc.reject(other.id, actor="bob", reason="again")
    actors = [t.actor for t in lc.store.transitions(other.id)]
    assert actors == ["t", "policy", "bob"]


def test_illegal_transitions_are_refused(lc: Lifecycle) -> None:
    r = lc.submit(LS, source="t")
    with pytest.raises(IllegalTransition, match="cannot become succeeded"), lc.store.write() as tx:
        tx.move(r.id, "proposed", "succeeded", "t")
    assert lc.store.get(r.id).state == "proposed"
    for to in TRANSITIONS["proposed"]:
        assert to != "running"


def test_execution_is_counted_and_recorded(lc: Lifecycle, engine: PolicyEngine) -> None:
    r = lc.decide(lc.submit(LS, source="t").id, engine)
    started = lc.start(r.id)
    assert started is not None
    assert started.executions == 1
    assert lc.start(r.id) is None  # already running: nobody starts it twice
    done = lc.finish(r.id, "succeeded", {"exit_code": 0, "stdout": "x"}, None)
    assert done.state == "succeeded"
    assert done.outcome == {"exit_code": 0, "stdout": "x"}
    kinds = [rec["kind"] for _, rec in audit.read_records(lc.audit.tool_use.path)]
    assert kinds == ["execution_started", "execution_finished"]


def test_expiry(lc: Lifecycle, engine: PolicyEngine) -> None:
    esc = lc.decide(lc.submit(GIT, source="t").id, engine)
    with lc.store.write() as tx:
        tx.update(esc.id, expires_at=tx.now - 1)
    with pytest.raises(Conflict, match="expired"):
        lc.approve(esc.id, actor="alice")
    assert [r.state for r in lc.expire()] == ["rejected"]
    assert "expired unanswered" in (lc.store.get(esc.id).reason or "")
    # An unused human approval expires too.
    esc2 = lc.decide(lc.submit({**GIT, "command": "git diff"}, source="t").id, engine)
    lc.approve(esc2.id, actor="alice")
    with lc.store.write() as tx:
        tx.update(esc2.id, approval_expires_at=tx.now - 1)
    assert lc.start(esc2.id) is None
    assert lc.store.get(esc2.id).reason == "the human approval expired"


def test_an_escalation_that_says_so_is_renewed_not_rejected(
    lc: Lifecycle, engine: PolicyEngine
) -> None:
    esc = lc.decide(lc.submit(GIT, source="t").id, engine)
    with lc.store.write() as tx:
        tx.update(esc.id, expires_at=tx.now - 1, on_expiry="escalate")
    assert [r.id for r in lc.expire()] == [esc.id]
    after = lc.store.get(esc.id)
    assert after.state == "escalated"
    assert after.expires_at is not None
    assert after.expires_at > after.updated_at
    kinds = [rec["kind"] for _, rec in audit.read_records(lc.audit.decisions.path)]
    assert kinds[-1] == "escalation_renewed"
    assert lc.approve(esc.id, actor="alice").state == "approved"


def test_recovery_after_a_crash(lc: Lifecycle, engine: PolicyEngine) -> None:
    a = lc.decide(lc.submit(LS, source="t").id, engine)
    chunk = {**LS, "tool": "file_chunker", "args": {"path": "/srv/x.txt", "segment": 0}}
    del chunk["command"]
    b = lc.decide(lc.submit(chunk, source="t").id, engine)
    for r in (a, b):
        assert lc.start(r.id) is not None
    after = {r.id: r.state for r in lc.recover(lambda p: p["tool"] == "file_chunker")}
    assert after == {a.id: "interrupted", b.id: "approved"}
    assert lc.requeue(a.id, actor="alice", reason="checked").state == "approved"


def test_audit_catches_up_what_a_crash_kept_out(tmp_path: Path, engine: PolicyEngine) -> None:
    lc = open_lifecycle(tmp_path)
    r = lc.submit(LS, source="t")
    # A crash after the commit and before the audit append:
    with lc.store.write() as tx:
        tx.move(r.id, "proposed", "suspended", "t", "crash test")
    assert len(lc.store.unaudited()) == 1
    # A command may still be between its commit and its append: not yet.
    assert lc.catch_up_audit(older_than_s=60) == 0
    assert lc.catch_up_audit() == 1
    last = list(audit.read_records(tmp_path / "decisions.jsonl"))[-1][1]
    assert (last["to"], last["recovered"]) == ("suspended", True)
    assert lc.store.unaudited() == []
    assert audit.verify(tmp_path / "decisions.jsonl").ok


def test_suspend_pending(lc: Lifecycle, engine: PolicyEngine) -> None:
    ids = [lc.decide(lc.submit(p, source="t").id, engine).id for p in (LS, GIT, RM)]
    fresh = lc.submit(variant(5), source="t")
    done = lc.suspend_pending(actor="op", reason="x")
    assert {(r.id, r.state) for r in done} == {
        (ids[0], "approved"),
        (ids[1], "escalated"),
        (fresh.id, "proposed"),
    }
    assert [lc.store.get(i).state for i in ids] == ["suspended", "suspended", "rejected"]
    assert lc.approve(ids[0], actor="op").state == "approved"
    # One the policy never decided goes back to it: no approval skips the guardrails.
    back = lc.approve(fresh.id, actor="op")
    assert back.state == "proposed"
    assert back.decision is None
    assert "returned to the policy" in (back.reason or "")


def _race(state: str, proposal_id: str, action: str, barrier: Any, results: Any) -> None:
    lc = open_lifecycle(Path(state))
    barrier.wait()
    try:
        if action == "approve":
            lc.approve(proposal_id, actor=f"pid{multiprocessing.current_process().pid}")
        elif action == "reject":
            lc.reject(proposal_id, actor="r", reason="race")
        elif lc.start(proposal_id) is None:
            raise Conflict("not started")
        results.put("won")
    except (Conflict, IllegalTransition) as e:
        results.put(f"lost: {e}")


@pytest.mark.parametrize("actions", [("approve", "approve"), ("approve", "reject")])
def test_racing_processes_exactly_one_wins(
    tmp_path: Path, engine: PolicyEngine, actions: tuple[str, str]
) -> None:
    lc = open_lifecycle(tmp_path)
    for round_ in range(5):
        esc = lc.decide(lc.submit({**GIT, "command": f"git log -{round_}"}, source="t").id, engine)
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(str(tmp_path), esc.id, a, barrier, results))
            for a in actions
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcome = sorted(results.get(timeout=10) for _ in procs)
        assert outcome[1] == "won", outcome
        assert outcome[0].startswith("lost: "), outcome
        assert len(lc.store.transitions(esc.id)) == 3


def test_racing_starts_run_once(tmp_path: Path, engine: PolicyEngine) -> None:
    lc = open_lifecycle(tmp_path)
    r = lc.decide(lc.submit(LS, source="t").id, engine)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(str(tmp_path), r.id, "start", barrier, results))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(results.get(timeout=10) for _ in procs).count("won") == 1
    assert lc.store.get(r.id).executions == 1


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "janus.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable proposal store"):
        Store(tmp_path)


def test_a_locked_database_is_a_clear_error(tmp_path: Path) -> None:
    Store(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "janus.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = Store(tmp_path, timeout_s=0.2)
        with pytest.raises(StoreError, match="locked"), store.write():
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "janus.db")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this janus-policy"):
        Store(tmp_path)


def test_unknown_ids(lc: Lifecycle) -> None:
    with pytest.raises(StoreError, match="no proposal"):
        lc.store.get("p-nothing")
    lc.submit(variant(0), source="t")
    for short in ("", "p", "p-1"):  # the only proposal, but too short a prefix to act on
        with pytest.raises(StoreError, match="at least 6 characters"):
            lc.store.get(short)
    a = lc.submit(variant(1), source="t")
    b = lc.submit(variant(2), source="t")
    common = next(i for i in range(len(a.id)) if a.id[i] != b.id[i])
    with pytest.raises(StoreError, match="several"):
        lc.store.get(a.id[:common])
