"""The emergency stop's hard cases: a stop that comes while an execution is
being set up, a broken agent.yaml, a damaged store, and recorded sandbox
pids that no longer belong to a sandbox."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from janus_policy.audit import AuditLogs
from janus_policy.cli import main
from janus_policy.config import load_config
from janus_policy.execution.tool_executor import ToolExecutor
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Store
from janus_policy.runtime import control
from janus_policy.runtime.emergency import emergency_stop

SLEEP = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -R /usr"}


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="janus-stop-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def executor(root: Path) -> ToolExecutor:
    cfg = root / "agent.yaml"
    cfg.write_text(f"harness: {{state_dir: {root / 'state'}, work_dir: {root / 'work'}}}\n")
    return ToolExecutor(load_config(cfg))


def test_a_stop_before_the_sandbox_starts_means_it_never_starts(root: Path) -> None:
    started: list[int] = []
    ex = executor(root).execute("p-1", SLEEP, {}, on_start=started.append, halted=lambda: True)
    assert (ex.status, ex.outcome, started) == ("killed", None, [])
    assert ex.error == "emergency stop: never started"


def test_a_stop_during_the_spawn_kills_what_started(root: Path) -> None:
    answers = iter([False, True])  # not yet halted before the spawn; halted right after
    started: list[int] = []
    ex = executor(root).execute(
        "p-2", SLEEP, {}, on_start=started.append, halted=lambda: next(answers)
    )
    assert ex.status == "killed"
    assert ex.outcome is not None
    assert ex.outcome["limit"] == "killed"
    assert len(started) == 1


def test_a_broken_config_does_not_keep_anyone_from_stopping(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = root / "state"
    cfg = root / "agent.yaml"
    cfg.write_text(f"harness: {{state_dir: {state}}}\nauto_executer: {{}}\n")  # a typo
    assert main(["emergency-stop", "--config", str(cfg)]) == 1  # stopped; no daemon found
    assert control.stop_flag(state) is not None
    assert "auto_executer" in capsys.readouterr().err  # the warning names the problem


def test_a_damaged_store_does_not_keep_anyone_from_stopping(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = root / "state"
    state.mkdir()
    (state / "janus.db").write_bytes(b"not a database" * 100)
    assert main(["emergency-stop", "--state-dir", str(state)]) == 1
    assert control.stop_flag(state) is not None
    out = capsys.readouterr()
    assert "FAILED: the proposal store cannot be opened" in out.out


def test_a_recorded_pid_that_is_not_the_daemons_sandbox_is_left_alone(root: Path) -> None:
    state = root / "state"
    lc = Lifecycle(Store(state), AuditLogs(state, fsync=False))
    r = lc.submit(SLEEP, source="t")
    with lc.store.write() as tx:  # as a daemon that died mid-run leaves it
        tx.move(r.id, "proposed", "approved", "t")
        tx.move(r.id, "approved", "running", "t")
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        lc.running_in(r.id, bystander.pid)  # a recycled pid, say
        report = emergency_stop(state, lc, actor="t", reason="test")
        assert report.killed_directly == []
        assert bystander.poll() is None
        assert report.running == [r.id]
    finally:
        bystander.kill()
        bystander.wait()


def test_bad_numbers_and_bytes_on_the_command_line(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JANUS_STATE_DIR", str(root / "state"))
    with pytest.raises(SystemExit) as e:
        main(["proposals", "watch", "--interval", "-1"])
    assert e.value.code == 2
    # Bytes that are not UTF-8 in free text become U+FFFD; the stop is recorded.
    assert main(["emergency-stop", "--reason", "r\udcff"]) == 1
    flag = control.stop_flag(root / "state")
    assert flag is not None
    assert flag["reason"] == "r\ufffd"
    assert main(["proposals", "show", "p-\udcff\udcfe\udcfd\udcfc"]) == 2
    assert "Traceback" not in capsys.readouterr().err
