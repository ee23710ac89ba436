"""The auto-executor: runs approved proposals, at most `max_concurrent` at
once, each on a long-lived worker thread (a sandbox dies with the thread that
started it, so workers must outlive their executions).

A proposal is moved to `running` (and its execution counted) before its
sandbox starts; if the daemon dies in between, start-up finds it running and
interrupts it rather than running it a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from janus_policy.execution.tool_executor import ToolExecutor
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Record


class AutoExecutor:
    def __init__(
        self,
        lifecycle: Lifecycle,
        tools: ToolExecutor,
        *,
        max_concurrent: int,
        on_finished: Callable[[Record], None] | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.tools = tools
        self.max_concurrent = max_concurrent
        self.on_finished = on_finished
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="janus-exec")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def capacity(self) -> int:
        return self.max_concurrent - self.running

    def dispatch(self, proposal_id: str) -> bool:
        """Starts an approved proposal if there is room and nobody else
        started it first; whether it was started."""
        with self._lock:
            if len(self._running) >= self.max_concurrent or proposal_id in self._running:
                return False
            self._running.add(proposal_id)
        record = self.lifecycle.start(proposal_id)
        if record is None:
            with self._lock:
                self._running.discard(proposal_id)
            return False
        self._pool.submit(self._run, record)
        return True

    def _run(self, record: Record) -> None:
        try:
            limits = (record.decision or {}).get("limits") or {}
            try:
                ex = self.tools.execute(
                    record.id,
                    record.proposal,
                    limits,
                    on_start=lambda pid: self.lifecycle.running_in(record.id, pid),
                )
                status, outcome, error = ex.status, ex.outcome, ex.error
            except Exception as e:  # recorded, never lost: the proposal must leave `running`
                status, outcome, error = "failed", None, f"{type(e).__name__}: {e}"
            done = self.lifecycle.finish(record.id, status, outcome, error)
            if self.on_finished:
                self.on_finished(done)
        finally:
            with self._lock:
                self._running.discard(record.id)

    def shutdown(self) -> None:
        """Waits for the executions under way to be recorded."""
        self._pool.shutdown(wait=True)
