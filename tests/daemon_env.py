"""A state dir, an agent.yaml and `janus-policy` processes for the tests that
drive a real daemon (test_daemon, test_service, test_thinking_cycle). The
`env` fixture (conftest.py) gives each test its own.

Sandboxes run as uid 65534 under root, so state and work dirs live under /tmp
(world-searchable), not under pytest's tmp_path in /root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from janus_policy.config import load_config
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.runtime import control

LS = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -la"}
ESCALATES = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls /usr"}
DENIED = {
    "tool": "shell",
    "action_type": "analysis",
    "risk": "low",
    "command": 'bash -c "rm -rf /"',
}
SLEEPER = {"tool": "sleeper", "action_type": "analysis", "risk": "low", "args": {"seconds": 60}}


class Env:
    def __init__(self, root: Path, extra: str = "") -> None:
        self.root = root
        self.state = root / "state"
        self.config = root / "agent.yaml"
        self.config.write_text(
            f"harness: {{state_dir: {self.state}, work_dir: {root / 'work'}}}\n"
            "audit: {fsync: false}\n"
            "tools:\n"
            "  sleeper: {command: [sleep, '{seconds}'], description: waits}\n" + extra
        )
        self.daemons: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "janus_policy", *args, "--config", str(self.config)],
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"{args}: exit {out.returncode}: {out.stderr.decode()}")
        return out

    def submit(self, proposal: dict[str, Any]) -> dict[str, Any]:
        out = self.cli("proposals", "submit", "-", "--format", "json", stdin=json.dumps(proposal))
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def daemon_argv(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "janus_policy",
            "daemon",
            "run",
            "--config",
            str(self.config),
            *extra,
        ]

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.root / "daemon.log").open("ab")
        p = subprocess.Popen(
            self.daemon_argv(*extra),
            stdout=log,
            stderr=log,
        )
        self.daemons.append(p)
        wait_for(lambda: control.daemon_pid(self.state) == p.pid or p.poll() is not None)
        assert p.poll() is None, (self.root / "daemon.log").read_text()
        return p

    def lifecycle(self) -> Lifecycle:
        return Lifecycle.open(load_config(self.config))

    def state_of(self, pid: str) -> str:
        lc = self.lifecycle()
        try:
            return lc.store.get(pid).state
        finally:
            lc.store.close()

    def stop_all(self) -> None:
        for p in self.daemons:
            if p.poll() is None:
                p.kill()
                p.wait()


def wait_for(cond: Callable[[], bool], timeout: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            said = f"; the daemon's log:\n{log.read_text()}" if log and log.exists() else ""
            raise AssertionError(f"condition not reached in time{said}")
        time.sleep(0.05)
