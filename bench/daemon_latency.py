"""Daemon latency, beside the raw sandbox spawn time measured in the same run.

  spawn      `SandboxRunner.run(["true"])`: the floor of any execution
  submit     a running `janus-policy daemon run` (real SQLite, bundled
             policies, real sandboxes): time from `submit` (the proposal's
             creation in the store) to its execution start (its transition to
             running), for N approvable proposals submitted at a steady pace
  stop       with 8 sandboxes running `sleep 60`: time from `emergency_stop`
             to the last sandbox process gone

Targets: submit-to-start p50 ≤ 150 ms; emergency stop ≤ 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from janus_policy.config import AgentConfig, load_config
from janus_policy.execution.sandbox import SandboxRunner, make_limits
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.runtime import control
from janus_policy.runtime.emergency import emergency_stop

SLEEPER_POLICY = """
ruleset: bench
default: escalate
rules:
  - id: approve-sleeper
    when: {field: tool, equals: sleeper}
    decision: approve
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark: a condition was not reached in time")
        time.sleep(0.01)


def spawn_floor(config: AgentConfig, n: int) -> list[float]:
    runner = SandboxRunner(config.sandbox)
    work = config.harness.work_dir
    work.mkdir(parents=True, exist_ok=True)
    profile = runner.profile(work)
    limits = make_limits({"timeout_s": 10})
    runner.run(["true"], profile, limits)  # warm up (probe, page cache)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner.run(["true"], profile, limits)
        times.append(time.perf_counter() - t0)
    return times


def start_daemon(config_path: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [sys.executable, "-m", "janus_policy", "daemon", "run", "--config", str(config_path)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: control.daemon_pid(state) == p.pid or p.poll() is not None)
    if p.poll() is not None:
        raise SystemExit(f"daemon exited: {log.read_text()}")
    return p


def submit_to_start(root: Path, n: int, pace_s: float) -> list[float]:
    state = root / "submit-state"
    cfg = root / "submit.yaml"
    cfg.write_text(
        f"harness: {{state_dir: {state}, work_dir: {root / 'work'}, novelty_window_s: 1}}\n"
        "auto_executor: {max_concurrent: 4}\n"
        "audit: {fsync: true}\n"
    )
    config = load_config(cfg)
    daemon = start_daemon(cfg, state, root / "submit.log")
    lc = Lifecycle.open(config)
    ids = []
    try:
        for i in range(n):
            # risk none: at low, 500 approvals would overspend the default
            # policy's daily risk budget (200 points per mission) and escalate.
            proposal = {
                "tool": "shell",
                "action_type": "analysis",
                "risk": "none",
                "command": ["echo", f"bench {i}"],
            }
            ids.append(lc.submit(proposal, source="bench").id)
            os.kill(daemon.pid, control.SIG_WAKE)
            time.sleep(pace_s)
        wait_for(lambda: not lc.store.proposals(states=("proposed", "approved", "running")))
    finally:
        daemon.terminate()
        daemon.wait(60)
    records = [lc.store.get(i) for i in ids]
    bad = [r.id for r in records if r.state != "succeeded"]
    if bad:
        raise SystemExit(f"benchmark: {len(bad)} executions did not succeed, e.g. {bad[0]}")
    return [(r.started_at or 0) - r.created_at for r in records]


def stop_latency(root: Path, sandboxes: int) -> tuple[float, float]:
    state = root / "stop-state"
    policy = root / "policy"
    policy.mkdir()
    (policy / "bench.yaml").write_text(SLEEPER_POLICY)
    cfg = root / "stop.yaml"
    cfg.write_text(
        f"policy_dir: {policy}\n"
        f"harness: {{state_dir: {state}, work_dir: {root / 'work'}}}\n"
        f"auto_executor: {{max_concurrent: {sandboxes}, allowed_tools: [sleeper]}}\n"
        # sleep changes nothing: mode beta auto-approves only what says so.
        "tools:\n  sleeper: {command: [sleep, '{seconds}'], read_only: true, idempotent: true,"
        " reversible: true}\n"
    )
    config = load_config(cfg)
    daemon = start_daemon(cfg, state, root / "stop.log")
    lc = Lifecycle.open(config)
    try:
        for i in range(sandboxes):
            sleeper = {
                "tool": "sleeper",
                "action_type": "analysis",
                "risk": "low",
                "args": {"seconds": 60 + i},
            }
            lc.submit(sleeper, source="bench")
        os.kill(daemon.pid, control.SIG_WAKE)

        def all_running() -> bool:
            running = lc.store.proposals(states=("running",))
            return len(running) == sandboxes and all(r.sandbox_pid for r in running)

        wait_for(all_running)
        pids = [r.sandbox_pid for r in lc.store.proposals(states=("running",)) if r.sandbox_pid]
        t0 = time.perf_counter()
        emergency_stop(state, lc, actor="bench", reason="benchmark")
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout=10)
        gone = time.perf_counter() - t0
        wait_for(lambda: not lc.store.proposals(states=("running",)), timeout=10)
        recorded = time.perf_counter() - t0
    finally:
        daemon.terminate()
        daemon.wait(60)
    return gone, recorded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proposals", type=int, default=500)
    ap.add_argument("--pace-ms", type=float, default=40.0, help="time between submits")
    ap.add_argument("--spawns", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as d:
        root = Path(d)
        os.chmod(root, 0o755)
        base = load_config(None, state_dir=root / "floor-state")
        floor = spawn_floor(base, args.spawns)
        latencies = submit_to_start(root, args.proposals, args.pace_ms / 1000)
        gone, recorded = stop_latency(root, 8)
    f50 = statistics.median(floor) * 1000
    p50, p95 = pct(latencies, 0.5) * 1000, pct(latencies, 0.95) * 1000
    print(f"daemon latency: one run, {args.proposals} proposals, one every {args.pace_ms:g} ms")
    print(f"  sandbox spawn of `true` (floor)  p50 {f50:7.1f} ms")
    print(
        f"  submit → execution start         p50 {p50:7.1f} ms ({p50 / f50:.1f}x the spawn)"
        f"   p95 {p95:7.1f} ms   [{'PASS' if p50 <= 150 else 'MISS'} p50 ≤ 150 ms]"
    )
    print(
        f"  emergency stop → 8 sandboxes gone     {gone * 1000:7.1f} ms"
        f"   ({recorded * 1000:.0f} ms until recorded as killed)"
        f"   [{'PASS' if gone <= 1 else 'MISS'} ≤ 1 s]"
    )


if __name__ == "__main__":
    main()
