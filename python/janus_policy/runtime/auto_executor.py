"""The auto-executor: runs approved proposals, at most `max_concurrent` at
once, each on a long-lived worker thread (a sandbox dies with the thread that
started it, so workers must outlive their executions).

A proposal is moved to `running` (and its execution counted) before its
sandbox starts; if the daemon dies in between, start-up finds it running and
interrupts it rather than running it a second time. `halted` is asked again
right before and right after the sandbox starts, so an emergency stop that
comes during the set-up still stops it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from janus_policy.errors import JanusError
from janus_policy.execution.tool_executor import ToolExecutor
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.store import Record

#: Waits between tries to record an outcome (a locked store, a full disk).
FINISH_RETRIES_S = (0.1, 0.5, 2.0, 5.0)


class AutoExecutor:
    def __init__(
        self,
        lifecycle: Lifecycle,
        tools: ToolExecutor,
        *,
        max_concurrent: int,
        halted: Callable[[], bool],
        log: Callable[..., None],
        on_finished: Callable[[Record], None] | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.tools = tools
        self.max_concurrent = max_concurrent
        self.halted = halted
        self.log = log
        self.on_finished = on_finished
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="janus-exec")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def dispatch(self, proposal_id: str) -> bool:
        """Starts an approved proposal if there is room and nobody else
        started it first; whether it was started."""
        with self._lock:
            if len(self._running) >= self.max_concurrent or proposal_id in self._running:
                return False
            self._running.add(proposal_id)
        try:
            record = self.lifecycle.start(proposal_id)
        except BaseException:
            self._release(proposal_id)
            raise
        if record is None:
            self._release(proposal_id)
            return False
        self._pool.submit(self._run, record)
        return True

    def _release(self, proposal_id: str) -> None:
        with self._lock:
            self._running.discard(proposal_id)

    def _run(self, record: Record) -> None:
        try:
            limits = (record.decision or {}).get("limits") or {}
            try:
                ex = self.tools.execute(
                    record.id,
                    record.proposal,
                    limits,
                    on_start=lambda pid: self.lifecycle.running_in(record.id, pid),
                    halted=self.halted,
                )
                status, outcome, error = ex.status, ex.outcome, ex.error
            except Exception as e:  # recorded, never lost: the proposal must leave `running`
                status, outcome, error = "failed", None, f"{type(e).__name__}: {e}"
            done = self._finish(record, status, outcome, error)
            if done is not None and self.on_finished:
                self.on_finished(done)
        except Exception as e:  # a worker thread must never die silently
            self.log("execution_error", proposal_id=record.id, error=f"{type(e).__name__}: {e}")
        finally:
            self._release(record.id)

    def _finish(
        self, record: Record, status: str, outcome: dict[str, Any] | None, error: str | None
    ) -> Record | None:
        """Records the outcome, retrying a store that is briefly unusable. If
        it stays unusable the proposal stays `running`, and the next start-up
        interrupts it."""
        for wait in (*FINISH_RETRIES_S, None):
            try:
                return self.lifecycle.finish(record.id, status, outcome, error)
            except JanusError as e:
                self.log("finish_failed", proposal_id=record.id, error=str(e), retry_in_s=wait)
                if wait is None:
                    return None
                time.sleep(wait)
        return None

    def shutdown(self) -> None:
        """Waits for the executions under way to be recorded."""
        self._pool.shutdown(wait=True)
