"""Missions: their YAML files (every bad input with its position), their state
in missions.json across restarts, transitions and their mission_log records,
one active mission at a time, budgets, stages advanced by real proposal
records (and by file_chunker in the real sandbox), and the missions verbs."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from janus_policy import audit
from janus_policy.agent.missions import (
    STATE_FILE,
    IllegalMissionTransition,
    MissionBook,
    MissionError,
    load_missions,
)
from janus_policy.audit import AuditLogs
from janus_policy.cli import main
from janus_policy.config import DEFAULT_CONFIG, load_config
from janus_policy.errors import InputError
from janus_policy.execution.tool_executor import ToolExecutor
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Record, Store

BUNDLED_MISSIONS = DEFAULT_CONFIG.parent / "missions"
DOC = "/srv/corpus.txt"


def mission(mission_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": mission_id,
        "objective": f"work on {mission_id}",
        "allowed_action_types": ["analysis", "process_chunk", "generate_new_nodes"],
        "proposal_budget": 10,
        **extra,
    }


READ_THEN_WRITE = [
    {"kind": "read_chunks", "path": DOC, "text": "note the topics"},
    {"kind": "instruction", "text": "write two nodes", "successes": 2},
]


def write(state: Path, *missions: dict[str, Any]) -> Path:
    folder = state / "missions"
    folder.mkdir(parents=True, exist_ok=True)
    for m in missions:
        (folder / f"{m['id']}.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    return folder


def open_book(state: Path) -> MissionBook:
    return MissionBook(state, state / "missions", AuditLogs(state, fsync=False))


def log(state: Path) -> list[dict[str, Any]]:
    return [r for _, r in audit.read_records(state / "mission_log.jsonl")]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    write(tmp_path, mission("alpha", priority=1), mission("beta", stages=READ_THEN_WRITE))
    return tmp_path


@pytest.fixture
def book(state: Path) -> MissionBook:
    return open_book(state)


# ---- loading ----


def test_the_bundled_missions_load() -> None:
    found = {m.id: m for m in load_missions(BUNDLED_MISSIONS)}
    assert set(found) == {"demo", "survey"}
    read, nodes = found["demo"].stages
    assert read.kind == "read_chunks"
    assert read.path == (BUNDLED_MISSIONS.parent / "data" / "corpus.txt").resolve()
    assert (nodes.kind, nodes.successes) == ("instruction", 2)


def test_loading_resolves_paths_and_orders_by_priority(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        mission("b-low"),
        mission("a-low", stages=[{"kind": "read_chunks", "path": "../doc.txt"}]),
        mission("z-high", priority=5),
    )
    (folder / "notes.txt").write_text("not a mission")
    found = load_missions(folder)
    assert [m.id for m in found] == ["z-high", "a-low", "b-low"]
    stage = found[1].stages[0]
    assert (stage.path, stage.text, stage.successes) == ((tmp_path / "doc.txt").resolve(), "", 1)
    assert str(found[1].location) == f"{folder}/a-low.yaml:1:1"
    assert load_missions(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("text", "code", "where", "words"),
    [
        (
            "id: m\nobjectiv: x\nallowed_action_types: [analysis]\nproposal_budget: 1\n",
            "E101",
            "2:1",
            "unknown key 'objectiv' (did you mean 'objective'?)",
        ),
        (
            "id: m\nobjective: x\nallowed_action_types: [analysis]\n",
            "E102",
            "1:1",
            "proposal_budget",
        ),
        (
            "id: m\nobjective: x\nallowed_action_types: [analysis]\nproposal_budget: 0\n",
            "E100",
            "4:1",
            "minimum of 1",
        ),
        (
            "id: m\nobjective: x\nallowed_action_types: [analysis]\nproposal_budget: 3\n"
            "stages:\n  - kind: read_chunk\n    path: /x\n",
            "E103",
            "6:5",
            "did you mean 'read_chunks'?",
        ),
        (
            "id: m\nobjective: x\nallowed_action_types: [analysis]\nproposal_budget: 3\n"
            "stages:\n  - kind: read_chunks\n    text: read\n",
            "E102",
            "6:5",
            "'path' is a required property",
        ),
        (
            "id: m\nobjective: x\nallowed_action_types: [analysis]\nproposal_budget: 3\n"
            "stages:\n  - kind: instruction\n    text: do\n    path: /x\n",
            "M002",
            "8:5",
            "stages[0].path: not for instruction stages: only a read_chunks",
        ),
        (
            "id: m\nobjective: x\nallowed_action_types: [analysis]\nproposal_budget: 3\n"
            "stages:\n  - {kind: read_chunks, path: /x, successes: 2}\n",
            "M002",
            "6:35",
            "stages[0].successes",
        ),
        ("id: m\nobjective: [unclosed\n", "E001", "3:1", "invalid YAML"),
    ],
)
def test_bad_missions_name_the_position(
    tmp_path: Path, text: str, code: str, where: str, words: str
) -> None:
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(InputError) as e:
        load_missions(tmp_path)
    found = [str(f) for f in getattr(e.value, "findings", [e.value])]
    assert any(f.startswith(f"{tmp_path}/m.yaml:{where}: {code} ") and words in f for f in found)


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, mission("same"), mission("other"))
    folder = tmp_path / "missions"
    (folder / "twin.yaml").write_text(yaml.safe_dump(mission("same")))
    (folder / "worse.yml").write_text("id: w\nproposal_budget: -1\n")
    with pytest.raises(MissionError) as e:
        load_missions(folder)
    codes = [(f.code, Path(f.location.path).name) for f in e.value.findings if f.location]
    assert codes == [("M001", "twin.yaml"), *[("E102", "worse.yml")] * 2, ("E100", "worse.yml")]
    assert f"duplicate mission id 'same': also {folder}/same.yaml:1:1" in str(e.value)
    assert isinstance(e.value, InputError)
    assert e.value.code == "M001"


# ---- state and transitions ----


def test_state_survives_a_restart(state: Path, book: MissionBook) -> None:
    book.activate("beta", actor="op")
    book.record_proposal("beta", {"tool": "file_chunker", "action_type": "process_chunk"})
    again = open_book(state)
    m, s = again.get("beta")
    assert (s.status, s.proposals, s.stage, s.segment) == ("active", 1, 0, 0)
    assert again.active() == (m, s)
    assert json.loads((state / STATE_FILE).read_text())["missions"]["beta"]["status"] == "active"


def test_one_active_mission_and_every_transition_logged(state: Path, book: MissionBook) -> None:
    assert book.active() is None
    assert [(m.id, s.status) for m, s in book.missions()] == [
        ("alpha", "inactive"),
        ("beta", "inactive"),
    ]
    book.activate("alpha", actor="op")
    book.activate("beta", actor="op2")
    assert [s.status for _, s in book.missions()] == ["paused", "active"]
    assert book.activate("beta", actor="op").status == "active"  # already: nothing logged
    book.pause("beta", actor="op")
    book.activate("alpha", actor="op")
    records = [(r["mission"], r["from"], r["to"], r["actor"]) for r in log(state)]
    assert records == [
        ("alpha", "inactive", "active", "op"),
        ("alpha", "active", "paused", "op2"),
        ("beta", "inactive", "active", "op2"),
        ("beta", "active", "paused", "op"),
        ("alpha", "paused", "active", "op"),
    ]
    assert [r["seq"] for r in log(state)] == [1, 2, 3, 4, 5]
    assert all(r["kind"] == "mission" and r["budget"] == 10 for r in log(state))
    assert audit.verify(state / "mission_log.jsonl").ok
    assert [h["to"] for h in book.history("beta")] == ["active", "paused"]
    assert book.history("alpha", 1)[0]["to"] == "active"


def test_illegal_transitions_are_refused(state: Path, book: MissionBook) -> None:
    with pytest.raises(IllegalMissionTransition, match="alpha is inactive: only an active"):
        book.pause("alpha", actor="op")
    with pytest.raises(InputError, match=r"no mission 'alhpa' \(did you mean 'alpha'\?\)"):
        book.activate("alhpa", actor="op")
    assert not (state / "mission_log.jsonl").exists()


def test_the_budget_exhausts_a_mission(state: Path, book: MissionBook) -> None:
    write(state, mission("alpha", proposal_budget=2))
    book.activate("alpha", actor="op")
    p = {"tool": "shell", "action_type": "analysis"}
    assert book.record_proposal("alpha", p).status == "active"
    exhausted = book.record_proposal("alpha", p)
    assert (exhausted.status, exhausted.proposals) == ("exhausted", 2)
    assert book.active() is None
    last = log(state)[-1]
    assert (last["from"], last["to"], last["actor"], last["proposals"]) == (
        "active",
        "exhausted",
        "agent",
        2,
    )
    assert "2 of 2 made, the last shell analysis" in last["reason"]
    with pytest.raises(IllegalMissionTransition, match="raise its proposal_budget"):
        book.activate("alpha", actor="op")
    # A budget raised in the file is read at once, and the mission can go on.
    write(state, mission("alpha", proposal_budget=20))
    assert book.activate("alpha", actor="op").status == "active"
    assert "Proposals left: 18 of 20." in book.describe(*book.get("alpha"))


def test_a_change_a_crash_kept_from_the_log_is_logged_next_time(
    state: Path, book: MissionBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(book.audit.missions, "append", crash)
    with pytest.raises(OSError, match="power cut"):
        book.activate("alpha", actor="op")
    monkeypatch.undo()
    again = open_book(state)
    assert again.get("alpha")[1].status == "active"  # saved before the log was written
    again.pause("alpha", actor="op")
    assert [(r["to"], r.get("recovered")) for r in log(state)] == [
        ("active", True),
        ("paused", None),
    ]
    assert json.loads((state / STATE_FILE).read_text())["unlogged"] == []


def test_concurrent_activations_leave_one_active(state: Path) -> None:
    def flip(mission_id: str) -> None:
        b = open_book(state)
        for _ in range(15):
            b.activate(mission_id, actor=mission_id)

    threads = [threading.Thread(target=flip, args=(m,)) for m in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [s.status for _, s in open_book(state).missions()]
    assert sorted(statuses) == ["active", "paused"]
    # Replaying the log gives every record's `from` as the status before it.
    status = {"alpha": "inactive", "beta": "inactive"}
    for r in log(state):
        assert status[r["mission"]] == r["from"]
        status[r["mission"]] = r["to"]
    assert sorted(status.values()) == ["active", "paused"]
    assert audit.verify(state / "mission_log.jsonl").ok


def test_a_damaged_state_file_is_reported(state: Path, book: MissionBook) -> None:
    (state / STATE_FILE).write_text('{"format": 1, "seq": 0, "missions": {"alpha": 3}}')
    with pytest.raises(InputError, match="E105 not a mission state file"):
        book.missions()
    (state / STATE_FILE).write_text("{")
    with pytest.raises(InputError, match=f"{state}/{STATE_FILE}: E001"):
        book.activate("alpha", actor="op")


# ---- stages, on real records ----


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(BUNDLED_POLICIES))
    yield e
    e.close()


class Runs:
    """Proposals through the real lifecycle, finished with a given outcome."""

    def __init__(self, state: Path, engine: PolicyEngine) -> None:
        self.lc = Lifecycle(
            Store(state / "store"), AuditLogs(state / "store", fsync=False), novelty_window_s=0
        )
        self.engine = engine

    def run(self, proposal: dict[str, Any], status: str, stdout: str = "", **kw: Any) -> Record:
        record = self.lc.decide(self.lc.submit(proposal, source="test").id, self.engine)
        if kw.get("human"):
            assert record.state == "escalated", record.reason
            record = self.lc.approve(record.id, actor="op")
        assert record.state == "approved", record.reason
        assert self.lc.start(record.id)
        outcome = {"exit_code": kw.get("exit_code", 0), "stdout": stdout, "stdout_truncated": False}
        return self.lc.finish(record.id, status, outcome, kw.get("error"))

    def chunk(self, segment: int, status: str, stdout: str = "", **kw: Any) -> Record:
        args = {"path": DOC, "segment": segment}
        p = {"tool": "file_chunker", "action_type": "process_chunk", "risk": "low", "args": args}
        return self.run({**p, "mission": "beta"}, status, stdout, **kw)

    def node(self, name: str) -> Record:
        args = {"name": name, "node": {"id": name, "kind": "transform", "title": name}}
        p = {"tool": "node_generator", "action_type": "generate_new_nodes", "risk": "low"}
        # node_generator is not reversible: even mode beta asks a human.
        return self.run({**p, "args": args, "mission": "beta"}, "succeeded", human=True)


FULL = "".join(f"line {i}\n" for i in range(5000))


def test_read_chunks_then_instruction_to_completed(
    state: Path, book: MissionBook, engine: PolicyEngine
) -> None:
    runs = Runs(state, engine)
    book.activate("beta", actor="op")
    assert '{"path": "/srv/corpus.txt", "segment": 0}' in book.describe(*book.get("beta"))
    assert book.record_outcome("beta", runs.chunk(0, "succeeded", FULL)).segment == 1
    # Not the next segment, or not read: nothing moves.
    assert book.record_outcome("beta", runs.chunk(3, "succeeded", FULL)).segment == 1
    assert book.record_outcome("beta", runs.chunk(1, "killed", exit_code=137)).segment == 1
    assert book.record_outcome("beta", runs.chunk(1, "succeeded", FULL)).segment == 2
    described = book.describe(*book.get("beta"))
    assert "Stage 1 of 2:" in described
    assert 'propose tool file_chunker with args {"path": "/srv/corpus.txt", "segment": 2}' in (
        described
    )
    past = runs.chunk(2, "failed", exit_code=3, error="exited with status 3: segment 2 is past")
    s = book.record_outcome("beta", past)
    assert (s.status, s.stage, s.segment) == ("active", 1, 0)
    assert "Stage 2 of 2:\nwrite two nodes" in book.describe(*book.get("beta"))
    first = runs.node("one")
    assert book.record_outcome("beta", first).succeeded == (first.id,)
    assert book.record_outcome("beta", first).succeeded == (first.id,)  # counted once
    done = book.record_outcome("beta", runs.node("two"))
    assert (done.status, done.stage) == ("completed", 2)
    assert "All stages are done." in book.describe(*book.get("beta"))
    assert [(r["from"], r["to"], r["stage"], r["reason"]) for r in log(state)[1:]] == [
        ("active", "active", 1, "stage 1 of 2 (read_chunks) done: 2 segments of /srv/corpus.txt"),
        ("active", "completed", 2, "stage 2 of 2 (instruction) done: 2 succeeded proposals"),
    ]
    with pytest.raises(IllegalMissionTransition, match="completed"):
        book.activate("beta", actor="op")
    assert audit.verify(state / "mission_log.jsonl").ok


def test_a_short_segment_ends_the_document(
    state: Path, book: MissionBook, engine: PolicyEngine
) -> None:
    runs = Runs(state, engine)
    book.activate("beta", actor="op")
    book.pause("beta", actor="op")  # outcomes of proposals already made still count
    s = book.record_outcome("beta", runs.chunk(0, "succeeded", "only\nthree\nlines\n"))
    assert (s.status, s.stage, s.segment) == ("paused", 1, 0)
    assert log(state)[-1]["reason"].endswith("done: 1 segments of /srv/corpus.txt")


def test_file_chunker_in_the_sandbox_drives_the_stage(engine: PolicyEngine) -> None:
    # Under /tmp: a sandbox started by root runs as nobody, who must reach it.
    with tempfile.TemporaryDirectory(prefix="janus-missions-") as d:
        root = Path(d)
        root.chmod(0o755)
        (root / "data").mkdir()
        corpus = root / "data" / "corpus.txt"
        corpus.write_text("".join(f"line {i}\n" for i in range(12000)))
        (root / "agent.yaml").write_text(
            yaml.safe_dump(
                {
                    "harness": {"state_dir": "state", "work_dir": "work"},
                    "tools": {"file_chunker": {"read_paths": ["data"]}},
                }
            )
        )
        config = load_config(root / "agent.yaml")
        state = config.harness.state_dir
        stages = [{"kind": "read_chunks", "path": "../../data/corpus.txt"}]
        write(state, mission("read", stages=stages))
        book = MissionBook.open(config)
        lc = Lifecycle.open(config)
        executor = ToolExecutor(config)
        book.activate("read", actor="op")
        for segment in range(3):
            m, s = book.active() or pytest.fail("no active mission")
            assert f'"segment": {segment}' in book.describe(m, s)
            args = {"path": str(corpus), "segment": s.segment}
            p = {"tool": "file_chunker", "action_type": "process_chunk", "risk": "low"}
            record = lc.decide(lc.submit({**p, "args": args}, source="t").id, engine)
            book.record_proposal("read", record.proposal)
            assert lc.start(record.id)
            e = executor.execute(record.id, record.proposal, {"timeout_s": 30})
            book.record_outcome("read", lc.finish(record.id, e.status, e.outcome, e.error))
        # The third segment held the last 2,000 lines: the document is read.
        m, s = book.get("read")
        assert (s.status, s.stage, s.proposals) == ("completed", 1, 3)


# ---- the verbs ----


def cli(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["missions", *argv, "--state-dir", str(state)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_missions_verbs(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, state, "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "STATUS", "PROPOSALS", "STAGE"]
    assert out.splitlines()[3].split() == [
        *("beta", "inactive", "0/10"),
        *("1/2", "read_chunks,", "segment", "0"),
    ]
    assert cli(capsys, state, "activate", "alpha")[:2] == (0, "mission alpha: active\n")
    code, out, _ = cli(capsys, state, "activate", "beta", "--format", "json")
    assert (code, json.loads(out)["status"]) == (0, "active")
    code, out, _ = cli(capsys, state, "list", "--format", "json")
    listed = {m["id"]: m for m in json.loads(out)}
    assert (listed["alpha"]["status"], listed["beta"]["status"]) == ("paused", "active")
    assert (listed["beta"]["budget"], listed["beta"]["stages"]) == (10, 2)
    code, out, _ = cli(capsys, state, "show", "beta")
    assert code == 0
    assert "> stage 1 read_chunks: /srv/corpus.txt, next segment 0" in out
    assert "inactive -> active" in out
    code, out, _ = cli(capsys, state, "show", "alpha", "--format", "json")
    shown = json.loads(out)
    assert [h["to"] for h in shown["history"]] == ["active", "paused"]
    assert shown["state"]["status"] == "paused"
    assert shown["stages"] == []
    code, _, err = cli(capsys, state, "pause", "alpha")
    assert (code, err) == (0, "")
    code, _, err = cli(capsys, state, "pause", "gamma")
    assert code == 2
    assert "M003 no mission 'gamma'" in err
    write(state, mission("gamma"))
    code, _, err = cli(capsys, state, "pause", "gamma")
    assert (code, err) == (
        1,
        "janus-policy: mission gamma is inactive: only an active mission can be paused\n",
    )
    code, _, err = cli(capsys, state, "show", "btea")
    assert (code, "did you mean 'beta'?" in err) == (2, True)


def test_the_verbs_report_bad_mission_files(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state / "missions" / "bad.yaml").write_text("id: bad\nbudget: 3\n")
    code, out, err = cli(capsys, state, "list")
    assert (code, out) == (2, "")
    assert f"{state}/missions/bad.yaml:1:1: E102" in err
    assert f"{state}/missions/bad.yaml:2:1: E101 unknown key 'budget'" in err
