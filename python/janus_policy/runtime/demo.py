"""The demo: a real daemon on the bundled policies whose thinking cycle runs
the scripted backend on the bundled script (`defaults/demo.yaml`) for a
mission, an operator approving four escalations, and a report of what
happened.

Everything in the report is read back from the store, the audit logs and the
Outcomes of real sandboxed executions; nothing is simulated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from janus_policy import audit, documents
from janus_policy.agent.missions import MissionBook
from janus_policy.config import load_config
from janus_policy.errors import InputError, JanusError, Location
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Record
from janus_policy.runtime import control
from janus_policy.runtime.summary import build_summary, render_text

SCRIPT = Path(__file__).resolve().parent.parent / "defaults" / "demo.yaml"
CORPUS_LINES = 12_000
OPERATOR = "operator (demo)"


@dataclass
class Step:
    shows: str
    expect: str
    proposal: dict[str, Any]
    operator: str | None = None
    id: str | None = None


@dataclass
class DemoRun:
    root: Path
    config: Path
    state_dir: Path
    steps: list[Step] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)
    audit_ok: dict[str, bool] = field(default_factory=dict)
    mission: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # the day's summary, as `janus-policy summary` prints it
    seconds: float = 0.0

    def state(self, step: Step) -> str:
        return self.records[step.id].state if step.id else "never proposed"

    @property
    def surprises(self) -> list[Step]:
        """Steps that did not end as the script expects."""
        return [s for s in self.steps if self.state(s) != s.expect]


MISSION = """\
id: demo-tour
objective: >-
  Show what supervised autonomy looks like: read the corpus, write a node,
  look around the machine, and try a few things a policy must stop.
allowed_action_types: [analysis, optimization_experiment, generate_new_nodes, process_chunk]
proposal_budget: 40
stages:
  - kind: instruction
    text: Propose one action at a time; every one is judged by policy.
    successes: 100
"""


def _config(root: Path, steps: list[Step]) -> Path:
    (root / "data").mkdir()
    with (root / "data" / "corpus.txt").open("w") as f:
        for i in range(1, CORPUS_LINES + 1):
            f.write(f"line {i}: the quick brown fox jumps over the lazy dog\n")
    (root / "missions").mkdir()
    (root / "missions" / "demo-tour.yaml").write_text(MISSION)
    with (root / "script.jsonl").open("w") as f:
        for step in steps:
            f.write(json.dumps(step.proposal) + "\n")
    cfg = root / "agent.yaml"
    cfg.write_text(
        "# The demo's agent.yaml: the defaults, plus where its files live.\n"
        f"harness: {{state_dir: {root / 'state'}, work_dir: {root / 'work'}}}\n"
        "agent:\n"
        "  backend: scripted\n"
        f"  script: {root / 'script.jsonl'}\n"
        f"  missions_dir: {root / 'missions'}\n"
        "  cycle_interval_s: 0.05\n"
        "tools:\n"
        f"  file_chunker: {{read_paths: [{root / 'data'}]}}\n"
        f"  node_generator: {{working_dir: {root / 'nodes'}}}\n"
        "  memory_hog:\n"
        "    description: sorts an endless line; only its memory limit stops it\n"
        "    command: [sort, /dev/zero]\n"
        "    limits: {memory_mb: 64, timeout_s: 30}\n"
    )
    return cfg


def _steps(corpus: Path) -> list[Step]:
    """The script, its `{corpus}` placeholders filled in."""
    doc = documents.read(SCRIPT)
    steps = []
    for item in doc.data:
        proposal = dict(item["proposal"])
        if isinstance(proposal.get("args"), dict) and proposal["args"].get("path") == "{corpus}":
            proposal["args"] = {**proposal["args"], "path": str(corpus)}
        steps.append(Step(item["shows"], item["expect"], proposal, item.get("operator")))
    return steps


def _settle(lc: Lifecycle, timeout: float = 120.0) -> None:
    """Waits until nothing is proposed, approved or running."""
    deadline = time.monotonic() + timeout
    while lc.store.proposals(states=("proposed", "approved", "running"), limit=1):
        if time.monotonic() > deadline:
            raise JanusError("demo: the daemon did not finish its work in time")
        time.sleep(0.05)


def _directory(root: Path | None) -> Path:
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="janus-demo-"))
    else:
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise InputError("E000", "the demo needs an empty directory", Location(str(root)))
    return root


def _wait(until: Callable[[], bool], daemon: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while not until():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise JanusError(f"demo: {what}; see the daemon's log")
        time.sleep(0.02)


def _play(run: DemoRun, lc: Lifecycle, daemon: subprocess.Popen[bytes]) -> None:
    """The agent's part (the daemon's thinking cycle), then the operator's."""
    steps = run.steps
    _wait(lambda: control.daemon_pid(run.state_dir) == daemon.pid, daemon, "no daemon started")
    # The thinking cycle proposes the script, one per cycle.
    _wait(lambda: len(lc.store.proposals(limit=len(steps))) == len(steps), daemon, "agent stopped")
    _settle(lc)
    for step, record in zip(steps, lc.store.proposals(newest_first=False), strict=False):
        step.id = record.id
    for step in steps:
        if step.operator == "approve" and step.id:
            lc.approve(step.id, actor=OPERATOR, note="looked at it: fine to run")
    os.kill(daemon.pid, control.SIG_WAKE)
    _settle(lc)


def run_demo(root: Path | None = None) -> DemoRun:
    began = time.monotonic()
    root = _directory(root)
    steps = _steps(root / "data" / "corpus.txt")
    cfg = _config(root, steps)
    config = load_config(cfg)
    run = DemoRun(root, cfg, config.harness.state_dir, steps)
    lc = Lifecycle.open(config)
    missions = MissionBook.open(config)
    missions.activate("demo-tour", actor=OPERATOR)
    with (root / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "janus_policy", "daemon", "run", "--config", str(cfg)],
            stdout=log,
            stderr=log,
        )
        try:
            _play(run, lc, daemon)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    mission, state = missions.get("demo-tour")
    run.mission = {"id": mission.id, **state.to_dict(), "budget": mission.proposal_budget}
    run.records = {s.id: lc.store.get(s.id) for s in run.steps if s.id}
    run.summary = render_text(build_summary(lc.store, date.today()))
    lc.store.close()
    for name in audit.LOG_NAMES:
        if (run.state_dir / name).exists():
            run.audit_ok[name] = audit.verify(run.state_dir / name).ok
    run.seconds = time.monotonic() - began
    return run
