"""The demo, the README's first command: a real daemon, store, sandbox and
audit logs; every step of the script must end as it expects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from janus_policy.cli.demo import report
from janus_policy.runtime.demo import run_demo


def test_the_demo_ends_as_its_script_expects() -> None:
    # Beneath a private (0700) parent, as `mktemp -d` makes: the sandboxes never
    # walk the host path, so nothing of it need be reachable by their uids.
    with tempfile.TemporaryDirectory(prefix="janus-demo-test-") as parent:
        os.chmod(parent, 0o700)
        d = Path(parent) / "demo"
        run = run_demo(d)
        assert [(s.shows, run.state(s)) for s in run.surprises] == []
        assert run.audit_ok == {
            "decisions.jsonl": True,
            "tool_use.jsonl": True,
            "mission_log.jsonl": True,
        }
        # The agent was the thinking cycle, for the demo's mission.
        assert all(r.mission == "demo-tour" for r in run.records.values())
        assert {r.source for r in run.records.values()} == {"agent (scripted)"}
        assert run.mission["proposals"] == len(run.steps)
        by_state = [run.state(s) for s in run.steps]
        for state in ("succeeded", "failed", "killed", "escalated", "rejected"):
            assert state in by_state
        # The approved escalations ran, and the node was really written.
        approved = [run.records[s.id] for s in run.steps if s.operator and s.id]
        assert all(r.approved_by and r.executions == 1 for r in approved)
        assert (Path(d) / "nodes" / "tokenize.yaml").is_file()
        text = report(run)
        assert f"As the script expects: {len(run.steps)} of {len(run.steps)} steps" in text
        assert "decisions.jsonl verified" in text
        assert "Success rate" in text or "success" in text.lower()
