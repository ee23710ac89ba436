"""The daemon end to end: a real `janus-policy daemon run` process, real SQLite,
the real policy engine and real sandboxes, driven through the CLI.

Sandboxes run as uid 65534 under root, so state and work dirs live under /tmp
(world-searchable), not under pytest's tmp_path in /root.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemon_env import DENIED, ESCALATES, LS, SLEEPER, Env, wait_for
from janus_policy import audit
from janus_policy.proposals.states import TERMINAL
from janus_policy.runtime import control


def test_every_path_through_a_running_daemon(env: Env) -> None:
    daemon = env.start()
    ok = env.submit(LS)
    esc = env.submit(ESCALATES)
    denied = env.submit(DENIED)
    dup = env.submit({**LS, "rationale": "again"})
    assert esc["state"] == "escalated"
    assert denied["state"] == "rejected"
    assert (dup["state"], dup["duplicate_of"]) == ("rejected", ok["id"])
    wait_for(lambda: env.state_of(ok["id"]) == "succeeded")
    shown = json.loads(env.cli("proposals", "show", ok["id"], "--format", "json").stdout)
    assert shown["outcome"]["exit_code"] == 0
    assert shown["outcome"]["method"] in ("bwrap", "native")
    assert [t["to_state"] for t in shown["transitions"]] == [
        "proposed",
        "approved",
        "running",
        "succeeded",
    ]
    # The human approves the escalated one, and it runs.
    env.cli("proposals", "approve", esc["id"], "--note", "fine")
    wait_for(lambda: env.state_of(esc["id"]) == "succeeded")
    shown = json.loads(env.cli("proposals", "show", esc["id"], "--format", "json").stdout)
    assert "bin" in shown["outcome"]["stdout"]
    assert shown["approved_by"]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    listed = json.loads(env.cli("proposals", "list", "--format", "json").stdout)
    assert {r["id"]: r["state"] for r in listed} == {
        ok["id"]: "succeeded",
        esc["id"]: "succeeded",
        denied["id"]: "rejected",
        dup["id"]: "rejected",
    }
    assert env.cli("audit", "verify", "--state-dir", str(env.state)).returncode == 0


def test_emergency_stop_kills_the_sandbox_and_suspends(env: Env) -> None:
    env.start()
    sleeper = env.submit(SLEEPER)
    assert sleeper["state"] == "escalated"  # not a built-in tool
    waiting = env.submit(ESCALATES)
    env.cli("proposals", "approve", sleeper["id"])
    wait_for(lambda: env.state_of(sleeper["id"]) == "running")
    lc = env.lifecycle()
    wait_for(lambda: lc.store.get(sleeper["id"]).sandbox_pid is not None)
    sandbox_pid = lc.store.get(sleeper["id"]).sandbox_pid
    assert sandbox_pid is not None
    dry = env.cli("emergency-stop", "--dry-run", "--format", "json")
    plan = json.loads(dry.stdout)
    assert plan["running"] == [sleeper["id"]]
    assert [s["id"] for s in plan["suspended"]] == [waiting["id"]]
    assert control.stop_flag(env.state) is None  # the dry run changed nothing
    assert env.state_of(waiting["id"]) == "escalated"
    out = env.cli("emergency-stop", "--format", "json")
    assert out.returncode == 0  # a daemon was found
    wait_for(
        lambda: env.state_of(sleeper["id"]) == "killed", timeout=30, log=env.root / "daemon.log"
    )
    assert not Path(f"/proc/{sandbox_pid}").exists()
    assert env.state_of(waiting["id"]) == "suspended"
    # Nothing runs while the flag is set, across a restart of the daemon.
    env.stop_all()
    env.start()
    fresh = env.submit(LS)
    time.sleep(1)
    assert env.state_of(fresh["id"]) == "proposed"
    assert env.cli("resume", check=False).returncode == 2  # not a terminal: needs --yes
    env.cli("resume", "--yes")
    wait_for(lambda: env.state_of(fresh["id"]) == "succeeded")


def test_until_idle_and_no_daemon(env: Env) -> None:
    # With no daemon, the proposal waits; one pass of the daemon decides and runs it.
    r = env.submit(LS)
    assert r["state"] == "proposed"
    out = subprocess.run(
        env.daemon_argv("--until-idle"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line)["event"] for line in out.stderr.decode().splitlines()]
    assert events[0] == "started"
    assert events[-1] == "stopped"
    assert env.state_of(r["id"]) == "succeeded"
    assert (
        env.cli("emergency-stop", check=False).returncode == 1
    )  # no daemon found; the flag is set
    assert control.stop_flag(env.state) is not None


def test_sighup_keeps_the_old_policy_when_the_new_one_is_broken(env: Env) -> None:
    policy = env.root / "policy"
    policy.mkdir()
    rules = (
        "ruleset: p\ndefault: deny\nrules:\n"
        "  - {id: ok, when: {command: {argv: [ls]}}, decision: approve}\n"
    )
    (policy / "p.yaml").write_text(rules)
    daemon = env.start("--policy", str(policy))
    (policy / "p.yaml").write_text("ruleset: p\nrules: [{id: x, when: {nonsense: 1}}]\n")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_failed" in (env.root / "daemon.log").read_text())
    failed = next(
        json.loads(line)
        for line in (env.root / "daemon.log").read_text().splitlines()
        if '"reload_failed"' in line
    )
    assert failed["kept_digest"].startswith("sha256:")
    assert failed["refused_files"].startswith("sha256:")
    assert failed["refused_files"] != failed["kept_digest"]
    assert env.submit(LS)["decision"]["decision"] == "approve"  # still the old policy
    (policy / "p.yaml").write_text(rules.replace("approve", "escalate"))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: '"reloaded"' in (env.root / "daemon.log").read_text())
    assert env.submit({**LS, "command": "ls -l"})["decision"]["decision"] == "escalate"
    kinds = [r["kind"] for _, r in audit.read_records(env.state / "decisions.jsonl")]
    assert kinds.count("policy_reload") == 2


@pytest.mark.slow
def test_kill_9_at_many_points_loses_nothing_and_runs_nothing_twice(env: Env) -> None:
    """A busy workload; the daemon is killed with SIGKILL at 50 different
    moments. After every restart: no proposal lost, none executed twice (the
    shell tool is declared non-idempotent here, so interrupted ones stay
    interrupted), and the audit chain verifies."""
    env.config.write_text(env.config.read_text() + "  shell: {idempotent: false}\n")
    rng = random.Random(20261123)
    lc = env.lifecycle()
    submitted: list[str] = []
    n = 0
    for _point in range(50):
        daemon = env.start()
        # Keep the daemon busy: new proposals arrive while it works.
        for _ in range(rng.randint(1, 4)):
            n += 1
            cmd = rng.choice(["ls -la dir{}", "echo run {}", "wc -c file{}", "ls /usr/{}"])
            submitted.append(lc.submit({**LS, "command": cmd.format(n)}, source="test").id)
            os.kill(daemon.pid, control.SIG_WAKE)
        time.sleep(rng.uniform(0.0, 0.6))
        daemon.kill()
        daemon.wait()
        records = {r.id: r for r in lc.store.proposals()}
        assert set(submitted) <= set(records)  # nothing lost
        assert all(r.executions <= 1 for r in records.values())  # nothing ran twice
    # Nothing is left to do once interrupted ones stay interrupted: this run may
    # end at once, so it is not started (and watched) like the others.
    final = subprocess.run(
        env.daemon_argv("--until-idle"), capture_output=True, timeout=120, check=False
    )
    assert final.returncode == 0, final.stderr
    records = {r.id: r for r in lc.store.proposals()}
    assert set(records) == set(submitted)
    for r in records.values():
        assert r.executions <= 1
        assert r.state in (*TERMINAL, "interrupted", "escalated"), (r.id, r.state)
        if r.state in ("succeeded", "failed", "killed", "timed_out"):
            assert r.executions == 1
    assert lc.store.unaudited() == []
    for name in audit.LOG_NAMES:
        path = env.state / name
        if path.exists():
            assert audit.verify(path).ok, audit.verify(path)


def test_mode_alpha_runs_only_what_a_human_approved(env: Env) -> None:
    env.config.write_text(env.config.read_text() + "auto_executor: {enabled: false}\n")
    env.start()
    r = env.submit(LS)
    assert r["state"] == "escalated"
    assert "mode alpha" in r["reason"]
    time.sleep(0.5)
    assert env.state_of(r["id"]) == "escalated"
    env.cli("proposals", "approve", r["id"])
    wait_for(lambda: env.state_of(r["id"]) == "succeeded")
