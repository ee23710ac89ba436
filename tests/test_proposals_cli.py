"""The `proposals` verbs in-process (no daemon: `submit` decides itself), their
output formats, exit codes and bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from janus_policy.cli import main

LS = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -la"}
GIT = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "git log"}


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="janus-cli-") as d:
        os.chmod(d, 0o755)
        monkeypatch.setenv("JANUS_STATE_DIR", str(Path(d) / "state"))
        yield Path(d) / "state"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def submit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proposal: dict[str, str]
) -> dict[str, Any]:
    path = tmp_path / f"p{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(proposal))
    code, out, err = run(capsys, "proposals", "submit", str(path), "--format", "json")
    assert code == 0
    result: dict[str, Any] = json.loads(out)
    # Only a daemon decides; with none running, the proposal waits for one.
    assert result["state"] == "proposed"
    assert "no daemon is running" in err
    return result


def one_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """`daemon run --until-idle`: decide and run what is pending."""
    assert run(capsys, "daemon", "run", "--until-idle")[0] == 0


def state_of(capsys: pytest.CaptureFixture[str], proposal_id: str) -> str:
    code, out, _ = run(capsys, "proposals", "show", proposal_id, "--format", "json")
    assert code == 0
    state: str = json.loads(out)["state"]
    return state


def test_submit_list_show_export(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = submit(capsys, tmp_path, LS)
    esc = submit(capsys, tmp_path, GIT)
    one_pass(capsys)
    assert state_of(capsys, ok["id"]) == "succeeded"
    assert state_of(capsys, esc["id"]) == "escalated"
    code, out, _ = run(capsys, "proposals", "list")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ID",
        "STATE",
        "TOOL",
        "ACTION",
        "RISK",
        "CREATED",
        "WHAT",
    ]
    assert ok["id"] in out
    assert "git log" in out
    code, out, _ = run(capsys, "proposals", "list", "--status", "escalated", "--format", "json")
    assert [r["id"] for r in json.loads(out)] == [esc["id"]]
    code, out, _ = run(capsys, "proposals", "list", "--since", "1h", "--limit", "1")
    assert esc["id"] in out
    assert ok["id"] not in out
    code, out, _ = run(capsys, "proposals", "show", esc["id"][:14])
    assert "escalate-version-control" in out
    assert "routing.yaml:" in out
    assert "escalated to operators" in out
    code, out, _ = run(capsys, "proposals", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == [ok["id"], esc["id"]]
    assert rows[1]["decision"] == "escalate"
    code, out, _ = run(capsys, "proposals", "export", "--status", "succeeded")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [ok["id"]]


def test_human_steps_and_their_exit_codes(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    esc = submit(capsys, tmp_path, GIT)
    other = submit(capsys, tmp_path, {**GIT, "command": "git status"})
    one_pass(capsys)
    code, out, _ = run(
        capsys, "proposals", "approve", esc["id"], "--note", "ok", "--format", "json"
    )
    assert code == 0
    approved = json.loads(out)
    assert approved["state"] == "approved"
    assert approved["approved_by"]
    code, _, err = run(capsys, "proposals", "approve", esc["id"])
    assert code == 1
    assert "someone else changed it first" in err
    code, out, _ = run(capsys, "proposals", "reject", other["id"], "--reason", "no")
    assert code == 0
    assert "rejected: no" in out
    # requeue: only interrupted ones, and only idempotent tools without --force
    code, _, err = run(capsys, "proposals", "requeue", other["id"])
    assert code == 1
    assert "is rejected: only an interrupted proposal is requeued" in err


def test_watch_prints_changes_when_not_a_terminal(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = submit(capsys, tmp_path, LS)
    code, out, _ = run(capsys, "proposals", "watch", "--count", "2", "--interval", "0.01")
    assert code == 0
    assert out.count(ok["id"]) == 1  # one line per change, not per refresh


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("tool: shell\naction_type: analysis\nrisk: tiny\n", r"p\.yaml:3:\d+: E\d+ .*tiny"),
        ("tool: shell\naction_type: analysis\nrisk: low\nsudo: yes\n", r"p\.yaml:4:1: E101 .*sudo"),
        ("tool: [unclosed\n", r"p\.yaml:\d+:\d+: E001 invalid YAML"),
        ("\x00\x01binary", r"p\.yaml.*E00\d"),
    ],
)
def test_bad_proposal_files_exit_2_with_a_position(
    state: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(content)
    code, _out, err = run(capsys, "proposals", "submit", str(p))
    assert code == 2
    assert re.search(expected, err), err
    assert "Traceback" not in err
    assert (
        not (state / "janus.db").exists()
        or json.loads(run(capsys, "proposals", "list", "--format", "json")[1]) == []
    )


def test_bad_options_and_ids(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "proposals", "list", "--status", "aproved")
    assert code == 2
    assert "did you mean 'approved'" in err
    code, _, err = run(capsys, "proposals", "list", "--since", "yesterday-ish")
    assert code == 2
    assert "--since" in err
    code, _, err = run(capsys, "proposals", "show", "p-nope")
    assert code == 2
    assert "no proposal 'p-nope'" in err


def test_a_damaged_store_is_a_clear_error(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state.mkdir(parents=True)
    (state / "janus.db").write_bytes(b"garbage" * 1000)
    code, _, err = run(capsys, "proposals", "list")
    assert code == 2
    assert "not a usable proposal store" in err
    assert "Traceback" not in err


def test_a_locked_store_is_a_clear_error(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proposal = submit(capsys, tmp_path, LS)
    holder = sqlite3.connect(state / "janus.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr("janus_policy.proposals.store.BUSY_TIMEOUT_S", 0.2)
    try:
        code, _, err = run(capsys, "proposals", "approve", proposal["id"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2
    assert "locked" in err
