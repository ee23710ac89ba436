"""The thinking cycle: the scripted backend and the real llama.cpp backend (on
the tiny model the suite writes) proposing for a mission, through the same
path as a submitted proposal; back-off on model errors; the daemon with the
cycle running."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from daemon_env import Env, wait_for
from janus_policy import documents
from janus_policy.agent.backends import BackendError, LlamaCppBackend, ScriptedBackend
from janus_policy.agent.missions import MissionBook
from janus_policy.agent.thinking_cycle import ThinkingCycle
from janus_policy.audit import AuditLogs
from janus_policy.config import LlamaCppConfig
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Store
from tiny_model import write_tiny_model

MISSION = """\
id: tour
objective: Look around the work dir and report what is there.
allowed_action_types: [analysis, process_chunk]
proposal_budget: {budget}
"""


@pytest.fixture(scope="module")
def model() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="janus-model-") as d:
        yield write_tiny_model(Path(d) / "tiny.gguf")


def setup(root: Path, budget: int = 10) -> tuple[Lifecycle, MissionBook]:
    state = root / "state"
    (root / "missions").mkdir()
    (root / "missions" / "tour.yaml").write_text(MISSION.format(budget=budget))
    audit = AuditLogs(state, fsync=False)
    lc = Lifecycle(Store(state), audit)
    missions = MissionBook(state, root / "missions", audit)
    return lc, missions


def cycle(lc: Lifecycle, missions: MissionBook, backend: Any, log: list[Any]) -> ThinkingCycle:
    return ThinkingCycle(
        lc,
        missions,
        backend,
        interval=lambda: 0.0,
        failure_backoff_s=0.01,
        log=lambda event, **f: log.append((event, f)),
        on_proposal=lambda r: None,
        tools=("shell",),
    )


def test_scripted_proposals_go_the_submitted_path(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(
        "- {tool: shell, action_type: analysis, risk: low, command: ls, mission: other}\n"
        "- {tool: shell, action_type: optimization_experiment, risk: low, command: pwd}\n"
        "- {tool: shell, action_type: analysis, risk: low, command: ls}\n"
    )
    lc, missions = setup(tmp_path)
    log: list[Any] = []
    c = cycle(lc, missions, ScriptedBackend(script), log)
    assert c.step() is None  # no active mission: nothing to do
    missions.activate("tour", actor="t")
    first = c.step()
    assert first is not None
    assert first.state == "proposed"
    assert first.mission == "tour"  # the active mission, not what the script said
    assert first.source == "agent (scripted)"
    off = c.step()
    assert off is not None
    assert off.state == "rejected"
    assert "not one mission tour allows" in (off.reason or "")
    again = c.step()
    assert again is not None
    assert again.duplicate_of == first.id
    assert c.step() is None
    assert c.exhausted
    assert not c.busy
    assert [e for e, _ in log] == ["agent_exhausted"]
    assert missions.get("tour")[1].proposals == 3


def test_a_mission_paused_during_generation_takes_no_proposal(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("- {tool: shell, action_type: analysis, risk: low, command: ls}\n")
    lc, missions = setup(tmp_path)
    missions.activate("tour", actor="t")
    scripted = ScriptedBackend(script)

    class PausedMeanwhile:  # the operator pauses the mission while the model works
        name = "scripted"
        context_tokens = scripted.context_tokens
        count_tokens = staticmethod(scripted.count_tokens)
        close = staticmethod(scripted.close)

        def propose(self, prompt: str, **kw: Any) -> dict[str, Any] | None:
            missions.pause("tour", actor="operator")
            return scripted.propose(prompt, **kw)

    r = cycle(lc, missions, PausedMeanwhile(), []).step()
    assert r is not None
    assert r.state == "rejected"
    assert "mission tour is paused" in (r.reason or "")
    assert missions.get("tour")[1].proposals == 0


def test_a_failing_backend_backs_off_and_recovers(tmp_path: Path) -> None:
    class Flaky:  # isolates the retry logic: fails three times, then runs out
        name = "flaky"
        context_tokens = 1000
        calls = 0

        def count_tokens(self, text: str) -> int:
            return len(text)

        def propose(
            self, prompt: str, *, tools: Sequence[str] = (), action_types: Sequence[str] = ()
        ) -> dict[str, Any] | None:
            self.calls += 1
            if self.calls <= 3:
                raise BackendError(f"model failed ({self.calls})")
            return None

        def close(self) -> None:
            pass

    lc, missions = setup(tmp_path)
    missions.activate("tour", actor="t")
    log: list[Any] = []
    c = cycle(lc, missions, Flaky(), log)
    c.start()
    wait_for(lambda: c.exhausted, timeout=30)
    c.stop()
    errors = [f for e, f in log if e == "agent_error"]
    assert [f["retry_in_s"] for f in errors] == [0.01, 0.02, 0.04]
    assert c.failures == 0  # reset by the success that followed


def test_the_real_model_proposes_only_what_may_be_proposed(tmp_path: Path, model: Path) -> None:
    backend = LlamaCppBackend(LlamaCppConfig(model_path=model, n_ctx=2048, max_tokens=1280))
    lc, missions = setup(tmp_path, budget=6)
    missions.activate("tour", actor="t")
    c = cycle(lc, missions, backend, [])
    records = []
    for _ in range(6):
        r = c.step()
        assert r is not None
        records.append(r)
    backend.close()
    validator = documents.validator("proposal")
    for r in records:
        assert validator.is_valid(r.proposal)
        assert r.proposal["tool"] == "shell"
        assert r.proposal["action_type"] in ("analysis", "process_chunk")
        assert r.mission == "tour"
    assert missions.get("tour")[1].status == "exhausted"
    assert c.step() is None  # the budget is spent: the mission is no longer active


def test_the_daemon_runs_the_llama_cycle_and_decides_every_proposal(model: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="janus-cycle-") as d:
        os.chmod(d, 0o755)
        env = Env(Path(d))
        (env.root / "missions").mkdir()
        (env.root / "missions" / "tour.yaml").write_text(MISSION.format(budget=4))
        env.config.write_text(
            env.config.read_text()
            + "agent:\n"
            + "  backend: llama_cpp\n"
            + f"  missions_dir: {env.root / 'missions'}\n"
            + "  cycle_interval_s: 0.01\n"
            + f"  llama_cpp: {{model_path: {model}, n_ctx: 2048, max_tokens: 1280}}\n"
        )
        env.cli("missions", "activate", "tour")
        try:
            daemon = env.start()
            lc = env.lifecycle()
            wait_for(lambda: len(lc.store.proposals()) >= 4, timeout=120)
            wait_for(lambda: not lc.store.proposals(states=("proposed", "approved", "running")))
            daemon.terminate()
            assert daemon.wait(30) == 0
        finally:
            env.stop_all()
        records = lc.store.proposals()
        assert len(records) == 4  # the budget
        for r in records:
            assert r.source == "agent (llama_cpp)"
            assert r.decision is not None or r.duplicate_of is not None
        events = [json.loads(line) for line in (env.root / "daemon.log").read_text().splitlines()]
        assert sum(e["event"] == "proposed" for e in events) == 4
        status = json.loads((env.state / "daemon.json").read_text())
        assert status["agent"]["backend"] == "llama_cpp"
        assert status["governor"]["enabled"] is True
