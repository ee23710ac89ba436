"""The daemon: the escapement loop that moves proposals along.

Each tick (10 Hz by default) it expires stale escalations, decides every
proposed proposal and hands approved ones to the auto-executor; a submitted
proposal also wakes it at once (SIGUSR1), so work is event-driven inside the
tick. SIGHUP reloads the policy (the old one stays if the new one is
invalid), SIGTERM/SIGINT stop it gracefully, SIGUSR2 (sent by
`emergency-stop`) kills every sandbox at once. While the emergency-stop flag
is set nothing is decided or executed, across restarts.

Logs are JSON Lines on stderr, one event per line.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from janus_policy import _sandbox
from janus_policy.agent.backends import make_backend
from janus_policy.agent.missions import MissionBook
from janus_policy.agent.prompt import CONSTITUTION
from janus_policy.agent.thinking_cycle import ThinkingCycle
from janus_policy.config import AgentConfig
from janus_policy.errors import JanusError
from janus_policy.execution.sandbox import SandboxRunner
from janus_policy.execution.tool_executor import ToolExecutor
from janus_policy.execution.tools import ToolRegistry
from janus_policy.policy.live import LivePolicy
from janus_policy.policy.load import PolicyError, files_digest
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.states import PENDING
from janus_policy.proposals.store import Record
from janus_policy.runtime import control
from janus_policy.runtime.auto_executor import AutoExecutor
from janus_policy.runtime.governor import Governor
from janus_policy.runtime.notify import Notifier

#: After SIGTERM, how long executions under way may still finish before they
#: are killed (and recorded as killed).
STOP_GRACE_S = 10.0
#: How often (and after how long) transitions missing from the audit log are
#: written: a command that died between its commit and its append leaves some.
AUDIT_CATCH_UP_S = 5.0


class Log:
    """JSON Lines on a stream: one object per event, with a UTC timestamp."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: str, **fields: Any) -> None:
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        line = json.dumps({"ts": ts, "event": event, **fields}, default=str)
        self.stream.write(line + "\n")
        self.stream.flush()


class Daemon:
    def __init__(self, config: AgentConfig, *, log: Log | None = None) -> None:
        self.config = config
        self.state_dir = config.harness.state_dir
        self.log = log or Log()
        self.lifecycle = Lifecycle.open(config)
        self.store = self.lifecycle.store
        self.audit = self.lifecycle.audit
        self.policy = LivePolicy(config.policy_dir, config.policy_settings())
        self.registry = ToolRegistry.from_config(config)
        self.registry.use_catalogue(self.policy.catalogue)
        self.tools = ToolExecutor(config, self.registry, SandboxRunner(config.sandbox))
        #: Set while an emergency stop is in force (seen by signal or by flag):
        #: no sandbox may start, and any that starts anyway is killed.
        self._halted = threading.Event()
        self.auto = AutoExecutor(
            self.lifecycle,
            self.tools,
            max_concurrent=config.auto_executor.max_concurrent,
            halted=self._is_halted,
            log=self.log,
            on_finished=self._finished,
        )
        #: What this run decided and finished, by state, for its last log line.
        self.decided: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.notify = Notifier.from_env()
        self.governor = Governor(config.governor)
        self.missions: MissionBook | None = None
        self.cycle: ThinkingCycle | None = None
        backend = make_backend(config.agent)
        if backend is not None:
            self.missions = MissionBook(
                self.state_dir,
                config.missions_dir,
                self.audit,
                poll_interval_s=config.harness.mission_poll_interval_s,
            )
            constitution = config.agent.constitution
            self.cycle = ThinkingCycle(
                self.lifecycle,
                self.missions,
                backend,
                constitution=constitution.read_text() if constitution else CONSTITUTION,
                recent_outcomes=config.agent.recent_outcomes,
                interval=lambda: self.governor.interval(config.agent.cycle_interval_s),
                failure_backoff_s=config.agent.failure_backoff_s,
                log=self.log,
                on_proposal=lambda _record: self._wake(),
                tools=[n for n in self.registry.names() if self.registry.get(n).takes_command],
            )
        self._stopping = False
        self._reload = False
        self._kill = False
        self._poked = False
        self._last_expire = 0.0
        self._last_status = 0.0
        self._last_audit = 0.0
        self._last_dispatch = 0.0
        self._failures = 0

    def _is_halted(self) -> bool:
        return self._halted.is_set() or control.stop_flag(self.state_dir) is not None

    # ---- signals: handlers only set flags; the wakeup fd ends the tick's sleep ----

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        elif signum == signal.SIGHUP:
            self._reload = True
        elif signum == control.SIG_STOP:
            self._kill = True
        elif signum == control.SIG_WAKE:
            self._poked = True

    def _wake(self) -> None:
        """Ends the tick's sleep from another thread."""
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")

    def _install_signals(self) -> Callable[[], None]:
        waker, self._sleeper = socket.socketpair()
        self._waker = waker
        waker.setblocking(False)
        self._sleeper.setblocking(False)
        old_fd = signal.set_wakeup_fd(waker.fileno(), warn_on_full_buffer=False)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, control.SIG_STOP, control.SIG_WAKE)
        old = {s: signal.signal(s, self._on_signal) for s in sigs}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_fd)
            waker.close()
            self._sleeper.close()

        return restore

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            select.select([self._sleeper], [], [], seconds)
        try:
            while self._sleeper.recv(512):
                pass
        except BlockingIOError:
            pass

    # ---- the loop ----

    def run(self, *, until_idle: bool = False) -> int:
        # Handlers first: a SIGUSR1/2 from another command must never find the
        # default action (terminate) once the lock says a daemon runs.
        restore = self._install_signals()
        lock = self._acquire()
        if lock is None:
            restore()
            pid = control.daemon_pid(self.state_dir)
            raise JanusError(f"a daemon already runs on {self.state_dir} (pid {pid})")
        try:
            self._start()
            self.notify.ready(self._status_line(control.stop_flag(self.state_dir) is not None))
            if self.cycle is not None:
                self.cycle.start()
            tick = 1.0 / self.config.harness.tick_hz
            while not self._stopping:
                began = time.monotonic()
                if self._guarded_step() and until_idle and self._idle():
                    break
                self._sleep(tick - (time.monotonic() - began))
        finally:
            self.notify.stopping()
            try:
                self._stop(until_idle)
            finally:
                self.notify.close()
                self.policy.close()
                self.store.close()
                lock.release()  # last: no second daemon while executions run
                restore()
        return 0

    def _acquire(self) -> control.DaemonLock | None:
        """The daemon lock; a command probing it at this very moment holds it
        for microseconds, so a refusal is retried briefly."""
        for _ in range(50):
            lock = control.DaemonLock.acquire(self.state_dir)
            if lock is not None or control.daemon_pid(self.state_dir) is not None:
                return lock
            time.sleep(0.01)
        return None

    def _guarded_step(self) -> bool:
        """One step; an error (a locked or full store, say) is logged and the
        loop goes on after a growing pause rather than dying with executions
        under way. Whether the step completed."""
        try:
            self._step()
        except Exception as e:
            self._failures += 1
            pause = min(0.1 * 2**self._failures, 10.0)
            self.log("step_failed", error=f"{type(e).__name__}: {e}", retry_in_s=pause)
            self._sleep(pause)
            return False
        self._failures = 0
        return True

    def _start(self) -> None:
        stopped = control.stop_flag(self.state_dir) is not None
        if stopped:
            self._halted.set()
        # While stopped, interrupted ones wait for a human even if idempotent.
        idempotent = self.registry.idempotent
        recovered = self.lifecycle.recover(lambda p: not stopped and idempotent(p))
        caught_up = self.lifecycle.catch_up_audit()
        self.log(
            "started",
            pid=os.getpid(),
            state_dir=str(self.state_dir),
            config=self.config.path,
            mode=self.config.mode,
            policy=str(self.policy.path),
            policy_digest=self.policy.digest,
            sandbox=self._method(),
            limits=self._limits(),
            emergency_stop=stopped,
        )
        for r in recovered:
            self.log("interrupted", proposal_id=r.id, tool=r.tool, now=r.state)
        if caught_up:
            self.log("audit_caught_up", records=caught_up)

    def _limits(self) -> dict[str, Any]:
        """Whether limits hold per sandbox here, and whether that stops auto-execution."""
        scope, why = self.tools.runner.limits
        return {"scope": scope, "reason": why, "refused": self.tools.refuses_auto_execution}

    def _method(self) -> str:
        """The sandbox method, probed now (not at the first execution)."""
        try:
            return self.tools.runner.method
        except JanusError as e:
            return f"unavailable: {e}"

    def _step(self) -> None:
        self.governor.tick()
        if self._reload:
            self._reload = False
            self._reload_policy()
        stopped = control.stop_flag(self.state_dir) is not None
        if self._kill or (stopped and not self._halted.is_set()):
            # Halted first, then kill: a sandbox starting meanwhile sees it.
            self._halted.set()
            self._kill = False
            self.log("emergency_stop", sandboxes_killed=_sandbox.kill_all())
        elif not stopped and self._halted.is_set():
            self._halted.clear()
            self.log("resumed")
        now = time.monotonic()
        if now - self._last_audit >= AUDIT_CATCH_UP_S:
            self._last_audit = now
            if caught := self.lifecycle.catch_up_audit(older_than_s=AUDIT_CATCH_UP_S):
                self.log("audit_caught_up", records=caught)
        if not self._halted.is_set():
            if now - self._last_expire >= 1.0:
                self._last_expire = now
                for r in self.lifecycle.expire():
                    self.log("expired", proposal_id=r.id, now=r.state, reason=r.reason)
            decided = False
            for pid in self.store.ids("proposed"):
                if self._stopping or self._kill:
                    break
                decided = self._decide(pid) or decided
            # Approvals made elsewhere (a human) are looked for every poll
            # interval; a wake-up or a fresh approval here looks at once.
            due = now - self._last_dispatch >= self.config.auto_executor.poll_interval_s
            if due or decided or self._poked:
                self._poked = False
                self._last_dispatch = now
                self._dispatch()
        self._write_status(stopped)
        self.notify.watchdog()

    def _dispatch(self) -> None:
        # The governor may allow fewer executions than the configured maximum.
        allowed = self.governor.concurrency(self.auto.max_concurrent)
        for pid in self.store.ids("approved"):
            if self.auto.running >= allowed or self._stopping or self._kill:
                break
            if self.auto.dispatch(pid):
                self.log("started_execution", proposal_id=pid)

    def _decide(self, proposal_id: str) -> bool:
        """Decides one proposal; whether it was approved."""
        try:
            r = self.lifecycle.decide(proposal_id, self.policy)
        except JanusError as e:  # another process decided it first, or the store failed
            self.log("decide_failed", proposal_id=proposal_id, error=str(e))
            return False
        self.decided[r.state] += 1
        self.log("decided", proposal_id=r.id, state=r.state, reason=r.reason)
        return r.state == "approved"

    def _finished(self, r: Record) -> None:
        self.finished[r.state] += 1
        if self.missions is not None and r.mission:
            try:
                self.missions.record_outcome(r.mission, r)
            except JanusError as e:  # a mission file removed meanwhile, say
                self.log("mission_outcome_failed", proposal_id=r.id, error=str(e))
        outcome = r.outcome or {}
        self.log(
            "finished",
            proposal_id=r.id,
            state=r.state,
            exit_code=outcome.get("exit_code"),
            limit=outcome.get("limit"),
            wall_s=outcome.get("wall_s"),
            error=r.reason,
        )

    def _reload_policy(self) -> None:
        self.notify.reloading()
        try:
            self._apply_reload()
        finally:
            self.notify.ready(self._status_line(control.stop_flag(self.state_dir) is not None))

    def _apply_reload(self) -> None:
        old = self.policy.digest
        try:
            result = self.policy.reload()
        except PolicyError as e:
            findings = [str(f) for f in e.findings]
            # The refused policy has no digest of its own; its files' bytes name it.
            refused = files_digest(self.policy.path)
            self.log("reload_failed", kept_digest=old, refused_files=refused, findings=findings)
            self.audit.decisions.append(
                "policy_reload",
                {"policy_digest": old, "refused_files": refused, "ok": False, "findings": findings},
            )
            return
        self.registry.use_catalogue(self.policy.catalogue)
        self.log("reloaded", old_digest=result.old_digest, new_digest=result.new_digest)
        self.audit.decisions.append(
            "policy_reload",
            {"policy_digest": result.new_digest, "old_digest": result.old_digest, "ok": True},
        )

    def _idle(self) -> bool:
        if self.auto.running:
            return False
        if self.cycle is not None and self.cycle.busy:
            return False
        if control.stop_flag(self.state_dir) is not None:
            return True  # nothing will move until `resume`
        return not (self.store.ids("proposed") or self.store.ids("approved"))

    def status(self, stopped: bool) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "mode": self.config.mode,
            "policy_digest": self.policy.digest,
            "policy": str(self.policy.path),
            "emergency_stop": stopped,
            "running": self.auto.running,
            "max_concurrent": self.auto.max_concurrent,
            "counts": self.store.counts(),
            "governor": self.governor.status(),
            "limits": self._limits(),
            "agent": self.cycle.status() if self.cycle else None,
        }

    def _write_status(self, stopped: bool) -> None:
        now = time.monotonic()
        if now - self._last_status < 1.0:
            return
        self._last_status = now
        control.write_status(self.state_dir, self.status(stopped))
        self.notify.status(self._status_line(stopped))

    def _status_line(self, stopped: bool) -> str:
        """One line for `systemctl status`."""
        counts = self.store.counts()
        pending = sum(counts.get(s, 0) for s in PENDING)
        line = (
            f"mode {self.config.mode}; running {self.auto.running}/{self.auto.max_concurrent}; "
            f"pending {pending} ({counts.get('escalated', 0)} escalated); "
            f"policy {self.policy.digest[7:19]}"
        )
        return ("EMERGENCY STOP; " if stopped else "") + line

    def _stop(self, until_idle: bool) -> None:
        if self.cycle is not None:
            self.cycle.stop()
        if not until_idle and self.auto.running:
            self.log("stopping", running=self.auto.running, grace_s=STOP_GRACE_S)
            deadline = time.monotonic() + STOP_GRACE_S
            while self.auto.running and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.auto.running:
                self.log("stop_killing", sandboxes_killed=_sandbox.kill_all())
        self.auto.shutdown()
        counts: dict[str, int] | str
        try:
            self._last_status = 0.0
            self._write_status(control.stop_flag(self.state_dir) is not None)
            counts = self.store.counts()
        except (JanusError, OSError) as e:  # stopping anyway; say why the figures are missing
            counts = f"unavailable: {e}"
        self.log("stopped", decided=dict(self.decided), finished=dict(self.finished), counts=counts)
