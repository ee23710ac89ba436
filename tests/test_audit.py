"""Audit logs: the hash chain, what verify finds, torn lines, rotation,
concurrent appenders in several processes, the audit verbs."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from janus_policy import documents
from janus_policy.audit import (
    GENESIS,
    LOG_NAMES,
    SCHEMA_VERSION,
    AuditError,
    AuditLog,
    AuditLogs,
    Tail,
    read_records,
    record_hash,
    verify,
)
from janus_policy.cli import main
from janus_policy.cli.audit import summary
from janus_policy.errors import InputError
from janus_policy.policy.simulate import read_proposals

DIGEST = "sha256:" + "ab" * 32
PROPOSAL = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -la"}


def fill(log: AuditLog, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        log.append("transition", {"proposal_id": f"p{i}", "to": "approved", "n": i})
        for i in range(start, start + n)
    ]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "decisions.jsonl", fsync=False)


# ---- records and the chain ----


def test_a_record_as_written(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "decisions.jsonl")
    first = log.append(
        "decision",
        {"decision": "approve", "proposal": PROPOSAL, "policy_digest": DIGEST, "proposal_id": "p1"},
    )
    second = log.append("policy_reload", {"proposal_id": None, "old": DIGEST})
    assert list(first) == [
        *("v", "ts", "kind", "proposal_id", "policy_digest"),
        *("decision", "proposal", "prev", "hash"),
    ]
    assert first["v"] == SCHEMA_VERSION
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["ts"])
    assert first["prev"] == GENESIS
    assert first["hash"] == record_hash(first)
    assert second["prev"] == first["hash"]
    assert "proposal_id" not in second  # None means not given
    assert [r for _, r in read_records(log.path)] == [first, second]
    assert log.path.read_bytes().isascii()
    for f in (log.path, log.lock_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_the_record_is_a_copy_taken_at_append(log: AuditLog) -> None:
    fields: dict[str, Any] = {"args": {"path": "/a"}, "ids": (1, 2)}
    written = log.append("mission", fields)
    fields["args"]["path"] = "/changed"
    assert written["args"] == {"path": "/a"}
    assert written["ids"] == [1, 2]
    assert verify(log.path).ok


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("Decision", {}, "kind: 'Decision' does not match"),
        ("mission", {"hash": "x"}, "set by the log"),
        ("mission", {"ts": "x"}, "set by the log"),
        ("decision", {"proposal_id": "p1"}, "'proposal' is a required property"),
        ("mission", {"proposal_id": 7}, "proposal_id"),
        ("mission", {"policy_digest": "md5:1"}, "policy_digest"),
        ("mission", {"x": float("nan")}, "Out of range float"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(
    log: AuditLog, kind: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        log.append(kind, fields)
    assert not log.path.exists() or log.path.read_bytes() == b""


def test_a_long_chain_verifies(log: AuditLog) -> None:
    written = fill(log, 500)
    result = verify(log.path)
    assert result.ok
    assert result.records == 500
    assert result.first_bad is None
    assert result.head == written[-1]["hash"]
    assert [r["prev"] for r in written[1:]] == [r["hash"] for r in written[:-1]]
    assert [n for n, _ in read_records(log.path)] == list(range(1, 501))


def test_the_three_logs_of_a_state_dir(tmp_path: Path) -> None:
    logs = AuditLogs(tmp_path / "state", fsync=False)
    logs.decisions.append("decision", {"proposal_id": "p1", "proposal": PROPOSAL})
    logs.tool_use.append("execution_started", {"proposal_id": "p1"})
    logs.missions.append("mission", {"mission": "m1"})
    names = (logs.decisions.path.name, logs.tool_use.path.name, logs.missions.path.name)
    assert names == LOG_NAMES
    assert all(verify(tmp_path / "state" / n).ok for n in LOG_NAMES)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


# ---- what verify finds ----


def _change_field(lines: list[bytes]) -> None:
    lines[6] = lines[6].replace(b'"to":"approved"', b'"to":"rejected"')


def _change_and_rehash(lines: list[bytes]) -> None:
    record = json.loads(lines[6])
    record["to"] = "rejected"
    record["hash"] = record_hash(record)
    lines[6] = json.dumps(record, separators=(",", ":")).encode() + b"\n"  # as written


def _duplicate_key(lines: list[bytes]) -> None:
    # Same parsed record (the last value wins in Python), other meaning to a
    # reader that keeps the first value.
    lines[6] = lines[6].replace(b'{"v":1,', b'{"v":1,"kind":"forged",', 1)


def _reformat(lines: list[bytes]) -> None:
    lines[6] = json.dumps(json.loads(lines[6])).encode() + b"\n"


def _drop(lines: list[bytes]) -> None:
    del lines[6]


def _drop_first(lines: list[bytes]) -> None:
    del lines[0]


def _swap(lines: list[bytes]) -> None:
    lines[6], lines[7] = lines[7], lines[6]


def _duplicate(lines: list[bytes]) -> None:
    lines.insert(7, lines[6])


def _truncate(lines: list[bytes]) -> None:
    del lines[8:]
    lines[7] = lines[7][:40]


def _not_json(lines: list[bytes]) -> None:
    lines[6] = b'{"v": 1, "ts": \n'


def _version(lines: list[bytes]) -> None:
    lines[6] = lines[6].replace(b'{"v":1,', b'{"v":2,')


def _not_an_object(lines: list[bytes]) -> None:
    lines[6] = b"[1, 2]\n"


@pytest.mark.parametrize(
    ("tamper", "line", "reason"),
    [
        (_change_field, 7, "hash mismatch"),
        (_change_and_rehash, 8, "dropped or moved"),
        (_drop, 7, "dropped or moved"),
        (_drop_first, 1, "dropped or moved"),
        (_swap, 7, "dropped or moved"),
        (_duplicate, 8, "dropped or moved"),
        (_truncate, 8, "incomplete last line"),
        (_not_json, 7, "not JSON"),
        (_version, 7, "schema version 2"),
        (_not_an_object, 7, "not a JSON object"),
        (_duplicate_key, 7, "not the record as written"),
        (_reformat, 7, "not the record as written"),
    ],
)
def test_verify_names_the_first_broken_line(
    log: AuditLog, tamper: Any, line: int, reason: str
) -> None:
    fill(log, 20)
    lines = lines_of(log.path)
    tamper(lines)
    log.path.write_bytes(b"".join(lines))
    result = verify(log.path)
    assert not result.ok
    assert result.first_bad is not None
    assert result.first_bad.path == log.path
    assert result.first_bad.line == line
    assert reason in result.first_bad.reason
    assert result.records == line - 1


def test_verify_of_a_missing_log_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such audit log"):
        verify(tmp_path / "decisions.jsonl")


# ---- torn lines ----


def test_a_torn_last_line_is_skipped_by_the_reader_and_moved_aside_by_the_next_append(
    log: AuditLog,
) -> None:
    fill(log, 5)
    sound = log.path.read_bytes()
    fragment = b'{"v":1,"ts":"2025-01-01T00:00:00.000000Z","kind":"trans'
    log.path.write_bytes(sound + fragment)

    assert [n for n, _ in read_records(log.path)] == [1, 2, 3, 4, 5]
    assert [p for _, p in read_proposals(log.path)] == []  # simulate's reader too
    bad = verify(log.path).first_bad
    assert bad is not None
    assert (bad.line, bad.reason[:10]) == (6, "incomplete")

    after = log.append("transition", {"proposal_id": "p9"})
    result = verify(log.path)
    assert result.ok
    assert result.records == 7
    assert log.path.read_bytes().startswith(sound)  # nothing recorded was lost
    records = [r for _, r in read_records(log.path)]
    note = records[5]
    assert note["kind"] == "torn_tail"
    assert note["offset"] == len(sound)
    assert note["bytes"] == len(fragment)
    assert note["sha256"] == hashlib.sha256(fragment).hexdigest()
    assert note["moved_to"] == log.torn_path.name
    assert records[6] == after
    assert after["prev"] == note["hash"]
    assert log.torn_path.read_bytes() == fragment + b"\n"
    assert stat.S_IMODE(log.torn_path.stat().st_mode) == 0o600


def test_a_whole_record_missing_only_its_newline_is_kept(log: AuditLog) -> None:
    written = fill(log, 3)
    log.path.write_bytes(log.path.read_bytes().rstrip(b"\n"))
    after = log.append("transition", {"proposal_id": "p9"})
    assert after["prev"] == written[-1]["hash"]
    assert [r for _, r in read_records(log.path)] == [*written, after]
    assert verify(log.path).ok
    assert not log.torn_path.exists()


def test_an_append_after_an_unreadable_last_record_fails_closed(log: AuditLog) -> None:
    fill(log, 3)
    broken = log.path.read_bytes() + b"not a record\n"
    log.path.write_bytes(broken)
    with pytest.raises(AuditError, match="last record is not a readable audit record"):
        log.append("transition", {})
    assert log.path.read_bytes() == broken


def test_the_reader_rejects_a_bad_line_before_the_end(log: AuditLog) -> None:
    fill(log, 3)
    lines = lines_of(log.path)
    lines[1] = b"{oops\n"
    log.path.write_bytes(b"".join(lines))
    with pytest.raises(InputError) as e:
        list(read_records(log.path))
    assert e.value.location is not None
    assert (e.value.location.line, e.value.code) == (2, "E001")


# ---- rotation ----


def test_rotation_keeps_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "tool_use.jsonl", fsync=False, rotate_bytes=2000)
    written = fill(log, 100)
    files = sorted(tmp_path.glob("tool_use.jsonl*"))
    rotated = [f for f in files if f.suffix[1:].isdigit()]
    assert len(rotated) >= 3
    assert all(f.stat().st_size <= 2000 for f in rotated)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in rotated)
    result = verify(log.path)
    assert result.ok
    assert result.records == 100
    assert result.files == (*sorted(rotated, key=lambda f: int(f.suffix[1:])), log.path)
    in_order = [r for f in result.files for _, r in read_records(f)]
    assert in_order == written
    # A rotated file stands for its whole log.
    assert verify(rotated[1]).records == 100


def test_a_break_in_a_rotated_file_is_named_and_a_missing_file_is_found(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "decisions.jsonl", fsync=False, rotate_bytes=2000)
    fill(log, 100)
    second = tmp_path / "decisions.jsonl.2"
    lines = lines_of(second)
    lines[2] = lines[2].replace(b'"to":"approved"', b'"to":"escalated"')
    second.write_bytes(b"".join(lines))
    bad = verify(log.path).first_bad
    assert bad is not None
    assert (bad.path, bad.line) == (second, 3)

    second.unlink()
    bad = verify(log.path).first_bad
    assert bad is not None
    assert (bad.path.name, bad.line) == ("decisions.jsonl.3", 1)
    assert "dropped" in bad.reason


def test_the_chain_continues_when_the_live_file_is_gone_after_a_rotation(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "decisions.jsonl", fsync=False, rotate_bytes=2000)
    written = fill(log, 30)
    log.path.rename(tmp_path / "decisions.jsonl.99")  # as a crash right after the rename leaves it
    after = log.append("transition", {})
    assert after["prev"] == written[-1]["hash"]
    assert verify(log.path).ok


# ---- several threads and processes ----


def _append_many(path: str, worker: int, count: int, start: Any) -> None:
    log = AuditLog(Path(path), rotate_bytes=16 * 1024)
    start.wait()  # every process is up before any appends

    def run(thread: int) -> None:
        for i in range(count):
            log.append("execution_started", {"proposal_id": f"w{worker}-t{thread}-{i}"})

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_processes_and_threads_appending_at_once_make_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "tool_use.jsonl"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=_append_many, args=(str(path), w, 100, start)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    result = verify(path)
    assert result.ok, result.first_bad
    assert result.records == 4 * 2 * 100
    assert len(result.files) > 1  # rotations happened while they wrote
    ids = [r["proposal_id"] for f in result.files for _, r in read_records(f)]
    expected = {f"w{w}-t{t}-{i}" for w in range(4) for t in range(2) for i in range(100)}
    assert sorted(ids) == sorted(expected)
    # Each thread's own records stay in the order it wrote them.
    mine = [int(i.rsplit("-", 1)[1]) for i in ids if i.startswith("w0-t1-")]
    assert mine == sorted(mine)


# ---- tail ----


def test_tail_reads_back_across_rotations_and_follows_new_ones(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "decisions.jsonl", fsync=False, rotate_bytes=1500)
    fill(log, 40)
    with Tail(log.path) as tail:
        assert [r["n"] for r in tail.last(25)] == list(range(15, 40))
        assert tail.poll() == []
        fill(log, 30, start=40)  # several rotations between two polls
        assert [r["n"] for r in tail.poll()] == list(range(40, 70))
        with log.path.open("ab") as f:
            f.write(b'{"v":1,"ts":')  # torn: not shown until the next append repairs it
        assert tail.poll() == []
        fill(log, 1, start=70)
        got = tail.poll()
        assert [r["kind"] for r in got] == ["torn_tail", "transition"]


def test_tail_of_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "mission_log.jsonl", fsync=False, rotate_bytes=1000)
    with Tail(log.path) as tail:
        assert tail.last(5) == []
        fill(log, 20)
        assert [r["n"] for r in tail.poll()] == list(range(20))


def test_summary_escapes_what_a_terminal_would_act_on() -> None:
    line = summary({"kind": "x", "reason": "\x1b]0;owned\x07", "to": "approved", "a": {"b": 1}})
    assert "\x1b" not in line
    assert line.startswith('reason="\\u001b]0;owned\\u0007" to=approved a={"b":1}')


# ---- simulate reads decisions.jsonl ----


def test_simulate_reads_only_decision_records(log: AuditLog) -> None:
    log.append("decision", {"proposal_id": "p1", "proposal": PROPOSAL, "decision": "approve"})
    log.append("transition", {"proposal_id": "p1", "to": "running"})
    log.append("execution_started", {"proposal_id": "p1", "proposal": PROPOSAL})
    log.append("decision", {"proposal_id": "p2", "proposal": {**PROPOSAL, "command": "id"}})
    got = list(read_proposals(log.path))
    assert [label.rsplit(":", 1)[1] for label, _ in got] == ["1", "4"]
    assert [p["command"] for _, p in got] == ["ls -la", "id"]


# ---- the schema ----


def test_the_schema_is_printed_and_describes_every_property(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "audit-record"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == documents.schema("audit-record")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert "description" in prop, name
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(printed)


# ---- the verbs ----


@pytest.fixture
def state(tmp_path: Path) -> Path:
    logs = AuditLogs(tmp_path / "state", fsync=False)
    fill(logs.decisions, 10)
    logs.missions.append("mission", {"mission": "m1", "state": "active"})
    return tmp_path / "state"


def test_verify_verb_intact(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"{state / 'decisions.jsonl'}: intact, 10 records in 1 file" in out
    assert "audit logs: 2 intact; 11 intact records" in out


def test_verify_verb_broken_text_and_json(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = state / "decisions.jsonl"
    lines = lines_of(path)
    del lines[3]
    path.write_bytes(b"".join(lines))
    monkeypatch.setenv("JANUS_STATE_DIR", str(state))

    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:4: prev is not the hash of the record before" in out
    assert "audit logs: 1 of 2 broken" in out

    assert main(["audit", "verify", str(path), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    (only,) = data["logs"]
    assert only["first_bad"]["path"] == str(path)
    assert only["first_bad"]["line"] == 4
    assert only["records"] == 3

    assert main(["audit", "verify", str(state / "mission_log.jsonl"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["logs"][0]["first_bad"] is None


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "verify", "{tmp}/nowhere.jsonl"],
        ["audit", "verify", "--state-dir", "{tmp}/nowhere"],
        ["audit", "verify", "{tmp}"],  # a dir without logs
        ["audit", "verify"],  # no state dir at all
        ["audit", "tail", "{tmp}/nowhere.jsonl"],
    ],
)
def test_bad_input_exits_2(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JANUS_STATE_DIR", raising=False)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert re.search(r"error: (\S+: )?E0\d\d ", capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv",
    [["audit", "tail", "-n", "-3", "x"], ["audit", "verify", "--format", "xml"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_tail_verb(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail", "--state-dir", str(state), "-n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    ts, kind, pid, *rest = out[0].split(" ")
    assert re.fullmatch(r"\S+Z", ts)
    assert (kind, pid, rest) == ("transition", "p8", ["to=approved", "n=8"])
    assert out[2].split(" ")[1:] == ["mission", "-", "mission=m1", "state=active"]

    assert main(["audit", "tail", str(state / "decisions.jsonl"), "--format", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["n"] for r in records] == list(range(10))
    assert all(r["hash"] == record_hash(r) for r in records)


class Lines:
    """Lines of a child's stdout, each waited for with a generous bound, so a
    broken follower fails the test instead of hanging it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.buf = b""

    def next(self) -> bytes:
        while b"\n" not in self.buf:
            if not self.sel.select(timeout=60):
                pytest.fail("no output from audit tail -f")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                pytest.fail("audit tail -f ended")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def test_tail_follow_until_interrupted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "decisions.jsonl", fsync=False, rotate_bytes=1500)
    fill(log, 1)
    argv = ["audit", "tail", "-f", "-n", "1", "--format", "json", str(log.path)]
    proc = subprocess.Popen([sys.executable, "-m", "janus_policy", *argv], stdout=subprocess.PIPE)
    try:
        lines = Lines(proc)
        assert json.loads(lines.next())["n"] == 0
        fill(log, 30, start=1)  # across rotations
        assert [json.loads(lines.next())["n"] for _ in range(30)] == list(range(1, 31))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
        proc.wait()
