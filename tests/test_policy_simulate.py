"""simulate: a policy over recorded proposals, and what a change flips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from janus_policy.audit import AuditLogs
from janus_policy.cli import main
from janus_policy.errors import InputError
from janus_policy.policy.simulate import read_proposals, simulate
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Store

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def proposal(command: str) -> dict[str, str]:
    return {"tool": "shell", "action_type": "analysis", "risk": "low", "command": command}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    lines = [
        json.dumps(proposal("ls")),
        json.dumps({"schema": 1, "proposal": proposal("rm -rf build")}),  # an audit record
        "",
        json.dumps(proposal("git log")),
        '{"tool": "shell", "act',  # torn last line
    ]
    p = tmp_path / "decisions.jsonl"
    p.write_text("\n".join(lines))
    return p


@pytest.fixture
def relaxed(tmp_path: Path) -> Path:
    """The default policy without its recursive-delete guardrail."""
    d = tmp_path / "relaxed"
    shutil.copytree(POLICIES, d)
    data = yaml.safe_load((d / "guardrails.yaml").read_text())
    data["rules"] = [r for r in data["rules"] if r["id"] != "deny-recursive-delete"]
    data.pop("tests")
    (d / "guardrails.yaml").write_text(yaml.safe_dump(data))
    return d


def test_reads_proposals_and_audit_records(source: Path) -> None:
    got = list(read_proposals(source))
    assert [label.rsplit(":", 1)[1] for label, _ in got] == ["1", "2", "4"]
    assert got[1][1]["command"] == "rm -rf build"


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"tool": \n' + json.dumps(proposal("ls")) + "\n")
    with pytest.raises(InputError) as e:
        list(read_proposals(p))
    assert e.value.location is not None
    assert e.value.location.line == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_flips_name_their_rules_permissive_first(source: Path, relaxed: Path, workers: int) -> None:
    report = simulate(relaxed, source, baseline=POLICIES, workers=workers)
    assert report.by_decision == {"approve": 1, "escalate": 2}
    (flip,) = report.flips
    assert flip.label.endswith(":2")
    assert (flip.baseline or ("", ()))[0] == "deny"
    assert flip.verdict[0] == "escalate"
    assert flip.more_permissive
    assert flip.to_dict()["rules_removed"] == ["deny-recursive-delete"]


def test_workers_agree_with_one_process(tmp_path: Path) -> None:
    p = tmp_path / "many.jsonl"
    cmds = ["ls", "rm -rf x", "git log", "cat $(x)", "echo hi", "python3 y.py"]
    p.write_text("\n".join(json.dumps(proposal(f"{cmds[i % 6]} {i}")) for i in range(5000)))
    one = simulate(POLICIES, p, workers=1)
    two = simulate(POLICIES, p, workers=2)
    assert [r.verdict for r in one.rows] == [r.verdict for r in two.rows]


def test_cli(
    source: Path, relaxed: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["simulate", "--policy", str(relaxed), "--baseline", str(POLICIES)]
    assert main([*args, "--input", str(source), "--changes-only"]) == 0
    out = capsys.readouterr().out
    assert "deny -> escalate (more permissive); no longer deny-recursive-delete" in out
    assert "3 proposals, 1 flipped (1 more permissive)" in out
    assert main([*args, "--input", str(source), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flips"] == 1
    assert len(data["rows"]) == 3
    yaml_source = tmp_path / "p.yaml"
    yaml_source.write_text(yaml.safe_dump([proposal("ls"), {"proposal": proposal("sudo ls")}]))
    assert main(["simulate", "--policy", str(POLICIES), "--input", str(yaml_source)]) == 0
    out = capsys.readouterr().out
    rows = [
        line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(str(yaml_source))
    ]
    assert rows[0] == "approve (approve-read-only-shell)"
    # Every rule that matched is listed, the one that decided first.
    assert rows[1].startswith("deny (deny-privilege")
    assert len(rows) == 2
    assert main(["simulate", "--policy", str(tmp_path / "none"), "--input", str(source)]) == 2


def test_the_proposal_store_is_a_source(tmp_path: Path, relaxed: Path) -> None:
    """simulate --input STATE_DIR replays what the store recorded, oldest first."""
    state = tmp_path / "state"
    lc = Lifecycle(Store(state), AuditLogs(state, fsync=False))
    for cmd in ("ls", "rm -rf build", "git log"):
        lc.submit(proposal(cmd), source="t")
    lc.store.close()
    rows = list(read_proposals(state))
    assert [p["command"] for _, p in rows] == ["ls", "rm -rf build", "git log"]
    assert rows[0][0].startswith(f"{state / 'janus.db'}:p-")
    assert [p["command"] for _, p in read_proposals(state / "janus.db")] == [
        "ls", "rm -rf build", "git log",
    ]  # fmt: skip
    report = simulate(relaxed, state, baseline=POLICIES)
    assert [(r.baseline or ("",))[0] + ">" + r.verdict[0] for r in report.flips] == [
        "deny>escalate"
    ]
    with pytest.raises(InputError, match="no proposal store"):
        list(read_proposals(tmp_path))


def test_a_bad_line_parsed_in_a_worker_is_reported_with_its_position(tmp_path: Path) -> None:
    lines = [json.dumps(proposal(f"ls f{i}")) for i in range(5000)]
    lines[2999] = '{"tool": '
    src = tmp_path / "big.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        simulate(POLICIES, src, workers=2)
    assert str(e.value).startswith(f"{src}:3000:")
    assert e.value.code == "E001"
