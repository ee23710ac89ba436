"""The daily summary over a real store, filled through the real lifecycle and
policy engine (and once by the demo's real daemon and sandbox): exact counts,
the text, JSON and HTML forms, escaping of attacker-controlled text, and the
HTML page rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from janus_policy.audit import AuditLogs
from janus_policy.cli import main
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import DB_NAME, Store
from janus_policy.runtime.demo import run_demo
from janus_policy.runtime.summary import PALETTE, Summary, build_summary, render_html, render_text

# Ends in BEL, not NUL: no argv can hold a NUL (such a command is opaque, and denied).
EVIL = "<script>alert(1)</script>\x1b[2J\u202eevil\x07"


def shell(command: str | list[str]) -> dict[str, Any]:
    return {"tool": "shell", "action_type": "analysis", "risk": "low", "command": command}


def outcome(
    wall: float, *, user: float, sys: float, rss: int, out: int, err: int, limit: str = "none"
) -> dict[str, Any]:
    return {
        "exit_code": 0,
        "signal": None,
        "limit": limit,
        "method": "bwrap",
        "wall_s": wall,
        "user_s": user,
        "sys_s": sys,
        "max_rss_kb": rss,
        "stdout_bytes": out,
        "stderr_bytes": err,
    }


@dataclass
class Filled:
    state_dir: Path
    day: date
    ids: dict[str, str]  # name → proposal id

    def summary(self, day: date | None = None) -> Summary:
        store = Store(self.state_dir)
        try:
            return build_summary(store, day or self.day)
        finally:
            store.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """Eleven proposals through every path; one of them created two days
    earlier (its created_at set in the database) and still waiting."""
    state = tmp_path_factory.mktemp("summary-state")
    engine = PolicyEngine(load_policy(BUNDLED_POLICIES))
    lc = Lifecycle(Store(state), AuditLogs(state, fsync=False))
    ids: dict[str, str] = {}

    def decided(name: str, proposal: dict[str, Any]) -> str:
        ids[name] = lc.decide(lc.submit(proposal, source="test").id, engine).id
        return ids[name]

    def ran(name: str, status: str, out: dict[str, Any]) -> None:
        assert lc.start(ids[name]) is not None
        lc.finish(ids[name], status, out, None if status == "succeeded" else status)

    decided("old", shell("git status"))
    decided("ls", shell("ls -la"))
    ran("ls", "succeeded", outcome(0.02, user=0.012, sys=0.005, rss=2048, out=100, err=0))
    decided("uname", shell("uname -a"))
    ran("uname", "failed", outcome(0.5, user=0.2, sys=0.1, rss=4096, out=0, err=50))
    decided("wc", shell("wc -l notes.txt"))
    ran(
        "wc",
        "timed_out",
        outcome(12.0, user=1.0, sys=0.5, rss=8192, out=1000, err=0, limit="timeout"),
    )
    chunk = {"tool": "file_chunker", "action_type": "process_chunk", "risk": "low"}
    decided("chunk", {**chunk, "args": {"path": "/srv/corpus.txt", "segment": 0}})
    ran(
        "chunk",
        "killed",
        outcome(0.3, user=0.1, sys=0.05, rss=65536, out=0, err=30, limit="memory"),
    )
    decided("git", shell("git log"))
    lc.approve(ids["git"], actor="alice", note="fine")
    ran("git", "succeeded", outcome(0.05, user=0.02, sys=0.01, rss=3000, out=200, err=0))
    decided("rm", shell("rm -rf /"))
    decided("evil", shell(["python3", "-c", EVIL]))
    decided("curl", shell("curl -s https://example.com"))
    ids["dup"] = lc.submit(shell("ls -la"), source="test").id
    ids["pending"] = lc.submit(shell("ls -la src"), source="test").id
    lc.store.close()
    engine.close()
    two_days_ago = time.time() - 2 * 86400
    with sqlite3.connect(state / DB_NAME) as db:
        db.execute("UPDATE proposals SET created_at = ? WHERE id = ?", (two_days_ago, ids["old"]))
    db.close()
    created = Store(state)
    days = {date.fromtimestamp(r.created_at) for r in created.proposals() if r.id != ids["old"]}
    created.close()
    assert len(days) == 1, "the proposals were created on one day"
    return Filled(state, days.pop(), ids)


def test_counts_rate_resources_and_tools_are_exact(filled: Filled) -> None:
    s = filled.summary()
    assert s.proposals == 10
    assert s.by_decision == {"approve": 4, "escalate": 3, "deny": 1, "undecided": 2}
    assert {k: n for k, n in s.by_state.items() if n} == {
        "proposed": 1,
        "escalated": 2,
        "rejected": 2,
        "succeeded": 2,
        "failed": 1,
        "timed_out": 1,
        "killed": 1,
    }
    assert (s.succeeded, s.finished, s.success_rate) == (2, 5, 0.4)
    r = s.resources
    assert r.outcomes == 5
    assert r.cpu_s == pytest.approx(0.017 + 0.3 + 1.5 + 0.15 + 0.03)
    assert r.wall_s == pytest.approx(12.87)
    assert (r.wall_p50_s, r.wall_max_s, r.max_rss_kb) == (0.3, 12.0, 65536)
    assert r.output_bytes == 1380
    assert r.limits == {"memory": 1, "timeout": 1}
    assert r.wall_histogram == [
        ("<10 ms", 0),
        ("10-100 ms", 2),
        ("0.1-1 s", 2),
        ("1-10 s", 0),
        ("≥10 s", 1),
    ]
    assert list(s.by_tool) == ["shell", "file_chunker"]
    shell_use, chunker = s.by_tool["shell"], s.by_tool["file_chunker"]
    assert (shell_use.executions, shell_use.finished, shell_use.succeeded) == (4, 4, 2)
    assert shell_use.wall_s == pytest.approx(12.57)
    assert (chunker.executions, chunker.finished, chunker.succeeded) == (1, 1, 0)


def test_top_rules_count_decisions_and_point_at_their_lines(filled: Filled) -> None:
    s = filled.summary()
    assert [(u.id, u.decision, u.decisions) for u in s.top_rules] == [
        # git log only reads, by its catalogue spec: the rule matches, version control decides
        ("approve-read-only-shell", "approve", 4),
        ("escalate-code-and-network", "escalate", 2),
        ("approve-file-chunker", "approve", 1),
        ("deny-credentials", "deny", 1),
        ("deny-recursive-delete", "deny", 1),
        ("deny-system-writes", "deny", 1),
        ("escalate-version-control", "escalate", 1),
    ]
    assert s.rules_fired == 7
    for u in s.top_rules:
        path, line = u.where.rsplit(":", 1)
        assert Path(path).parent == BUNDLED_POLICIES
        assert u.id in Path(path).read_text().splitlines()[int(line) - 1]


def test_waiting_escalations_are_those_escalated_now_whatever_the_day(filled: Filled) -> None:
    s = filled.summary()
    assert [w.id for w in s.waiting] == [filled.ids[n] for n in ("old", "evil", "curl")]
    assert {w.approvers for w in s.waiting} == {"operators"}
    assert all(w.expires_at and w.expires_at > w.created_at for w in s.waiting)
    assert s.waiting[0].what == "shell: git status"
    old = filled.summary(filled.day - timedelta(days=2))
    assert (old.proposals, old.by_decision["escalate"]) == (1, 1)


def test_another_day_is_empty_but_still_shows_what_waits(filled: Filled) -> None:
    s = filled.summary(filled.day + timedelta(days=1))
    assert s.proposals == 0
    assert set(s.by_decision.values()) == set(s.by_state.values()) == {0}
    assert (s.finished, s.success_rate, s.top_rules, s.by_tool) == (0, None, [], {})
    assert s.resources.outcomes == 0
    assert s.resources.wall_p50_s is None
    assert len(s.waiting) == 3
    text = render_text(s)
    assert "Success rate: n/a (no execution finished)" in text
    assert "Top rules fired (0 of 0" in text


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["summary", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_form(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "--state-dir", str(filled.state_dir), "--date", filled.day.isoformat()
    )
    assert code == 0
    assert out.startswith(f"Janus Policy daily summary: {filled.day} (local time, UTC")
    assert "Proposals: 10\n" in out
    assert "by decision: approve 4, escalate 3, deny 1, undecided 2\n" in out
    assert "Success rate: 40.0% (2 succeeded of 5 executions finished)" in out
    assert "CPU (user+sys) 2.00 s; wall 12.87 s total, p50 300 ms, max 12.00 s" in out
    assert "max RSS 64.0 MiB; output 1.3 KiB" in out
    assert "limits that fired: memory 1, timeout 1" in out
    assert "   4  approve-read-only-shell  approve  " in out
    assert "shell: 4 executions, 2 of 4 finished succeeded" in out
    assert "Escalations waiting now (any day): 3" in out
    assert f"  {filled.ids['curl']}  shell: curl -s https://example.com\n" in out


def test_json_form_is_the_same_data(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--state-dir", str(filled.state_dir), "--date", filled.day.isoformat())
    code, out, _ = run_cli(capsys, *argv, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["day"] == filled.day.isoformat()
    assert data["proposals"] == 10
    assert data["success"] == {"succeeded": 2, "finished": 5, "rate": 0.4}
    assert data["by_decision"] == filled.summary().by_decision
    assert data["resources"]["limits"] == {"memory": 1, "timeout": 1}
    assert data["resources"]["wall_histogram"][-1] == {"bin": "≥10 s", "count": 1}
    assert data["top_rules"][0]["id"] == "approve-read-only-shell"
    waiting = data["escalations_waiting"]
    assert [w["id"] for w in waiting] == [filled.ids[n] for n in ("old", "evil", "curl")]
    # The JSON keeps the data as recorded; json escapes what needs it.
    assert waiting[1]["what"] == f"shell: python3 -c {EVIL}"
    assert data["by_tool"]["file_chunker"]["executions"] == 1


def test_output_file_and_bad_input(
    filled: Filled, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "summary.html"
    state = ("--state-dir", str(filled.state_dir))
    assert run_cli(capsys, *state, "--format", "html", "--output", str(target)) == (0, "", "")
    assert target.read_text().startswith("<!DOCTYPE html>")
    code, _, err = run_cli(capsys, *state, "--date", "2025-02-30")
    assert code == 2
    assert "--date '2025-02-30': expected a calendar date as YYYY-MM-DD" in err
    for edge in ("9999-12-31", "0001-01-01"):  # the next or the day itself out of range
        code, _, err = run_cli(capsys, *state, "--date", edge)
        assert code == 2
        assert "E310" in err
    code, _, err = run_cli(capsys, "--state-dir", str(tmp_path / "nowhere"))
    assert code == 2
    assert f"no proposal store in {tmp_path / 'nowhere'}" in err
    assert not (tmp_path / "nowhere").exists()
    code, _, err = run_cli(capsys, *state, "--output", str(tmp_path / "no" / "such" / "file"))
    assert code == 2
    assert f"cannot write {tmp_path / 'no' / 'such' / 'file'}: No such file" in err
    with pytest.raises(SystemExit) as e:
        main(["summary", "--format", "pdf"])
    assert e.value.code == 2


def unsafe(text: str) -> set[str]:
    """Characters a terminal or a reader could be fooled by."""
    return {c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")}


def test_attacker_controlled_text_is_neutralised(filled: Filled) -> None:
    s = filled.summary()
    text = render_text(s)
    assert unsafe(text) == set()
    assert "shell: python3 -c <script>alert(1)</script>\ufffd[2J\ufffdevil\ufffd" in text
    page = render_html(s)
    assert unsafe(page) == set()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\ufffd[2J\ufffdevil\ufffd" in page


# ---- the page in headless Chromium ----


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("JANUS_ALLOW_MISSING_CHROMIUM") == "1":
        pytest.skip("chromium is not installed and JANUS_ALLOW_MISSING_CHROMIUM=1")
    pytest.fail(
        "chromium is not installed; the HTML summary is tested in headless Chromium: "
        "apt-get install -y chromium (CI installs it through .ci/run), or set "
        "JANUS_ALLOW_MISSING_CHROMIUM=1 to skip this test"
    )


def headless(page: Path, *flags: str) -> str:
    with tempfile.TemporaryDirectory(prefix="janus-chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",  # as root (CI) Chromium refuses to start otherwise
                "--disable-gpu",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile}",
                *flags,
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,  # a hang guard, not a measurement
            check=False,
        )
    assert done.returncode == 0, done.stderr
    return done.stdout


class DomText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1

    def handle_data(self, data: str) -> None:
        self.words += data.split()

    @property
    def text(self) -> str:
        return " ".join(self.words)


def png_colours(png: bytes) -> tuple[int, int, Counter[str]]:
    """Width, height and how many pixels of each colour (#rrggbb) of an 8-bit
    RGB(A), non-interlaced PNG such as Chromium writes."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, header, idat = 8, b"", b""
    while pos < len(png):
        size = int.from_bytes(png[pos : pos + 4], "big")
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + size]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + size
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    assert (header[8], header[9], header[12]) in ((8, 2, 0), (8, 6, 0))
    bpp = 3 if header[9] == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytes(stride), Counter[str]()
    for y in range(height):
        start = y * (stride + 1)
        filt, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride) if filt else ():
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if filt == 1:
                line[x] = (line[x] + a) & 255
            elif filt == 2:
                line[x] = (line[x] + b) & 255
            elif filt == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = bytes(line)
        colours.update(prev[x : x + 3].hex() for x in range(0, stride, bpp))
    return width, height, colours


def test_the_html_page_in_headless_chromium(filled: Filled, tmp_path: Path) -> None:
    page = tmp_path / "summary.html"
    page.write_text(render_html(filled.summary()), encoding="utf-8")

    dom = DomText()
    dom.feed(headless(page, "--dump-dom"))
    text = dom.text
    assert dom.tags["svg"] >= 3
    assert dom.tags["script"] == 0
    assert f"Janus Policy daily summary: {filled.day}" in text
    # The numbers, written as text: the cards, the charts' labels, the tables.
    assert "10 proposals 40.0% success rate: 2 of 5 finished 5 sandboxed executions" in text
    assert "By decision approve 4 escalate 3 deny 1 undecided 2" in text
    assert "By state proposed 1 escalated 2 rejected 2 succeeded 2 failed 1 timed_out 1" in text
    assert "Limits that fired: memory 1, timeout 1." in text
    assert "Wall time of executions 0 <10 ms 2 10-100 ms 2 0.1-1 s 0 1-10 s 1 ≥10 s" in text
    assert "4 approve-read-only-shell approve whitelist.yaml:" in text
    assert "shell 4 4 2" in text
    # The attacker's markup is text on the page, not an element.
    assert "<script>alert(1)</script>" in text

    shot = tmp_path / "summary.png"
    headless(page, f"--screenshot={shot}", "--window-size=1100,1600")
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == (1100, 1600)
    assert len(colours) > 50
    # The bars were drawn: the colours of approve, deny and escalate fill real areas.
    for name in ("approve", "deny", "escalate"):
        assert colours[PALETTE[name].lstrip("#")] > 200, name


def test_the_summary_of_the_demo_matches_what_happened() -> None:
    root = Path(tempfile.mkdtemp(prefix="janus-summary-demo-", dir="/tmp"))
    try:
        run = run_demo(root)
        records = list(run.records.values())
        store = Store(run.state_dir)
        try:
            s = build_summary(store, date.fromtimestamp(records[0].created_at))
        finally:
            store.close()
        states = Counter(r.state for r in records)
        assert {k: n for k, n in s.by_state.items() if n} == dict(states)
        assert (s.succeeded, s.finished) == (
            states["succeeded"],
            sum(states[k] for k in ("succeeded", "failed", "timed_out", "killed")),
        )
        assert s.resources.outcomes == sum(1 for r in records if r.outcome)
        assert s.resources.limits == {"memory": 1}
        assert [w.id for w in s.waiting] == [r.id for r in records if r.state == "escalated"]
        assert s.by_decision["undecided"] == sum(1 for r in records if r.decision is None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
