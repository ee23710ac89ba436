"""Running an approved proposal: tool → invocation → limits → sandbox → Execution.

The limits are the tightest of the decision's, the tool's defaults, the
tool's configuration and the global maxima; the network is on only if every
one of them allows it. Each execution gets a fresh work dir under
harness.work_dir (removed afterwards), unless the tool keeps its output in
its own working_dir. Nothing here raises for a tool or sandbox problem: the
Execution says "failed" and why. Safe to call from several threads.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_policy.config import AgentConfig
from janus_policy.errors import JanusError
from janus_policy.execution.sandbox import Outcome, SandboxRunner, make_limits
from janus_policy.execution.tools import Tool, ToolRegistry

__all__ = ["Execution", "ToolExecutor"]

#: The keys of the sandbox's Limits; a decision's other keys are not limits.
LIMIT_KEYS = (
    "cpu_percent",
    "memory_mb",
    "disk_mb",
    "timeout_s",
    "nproc",
    "nofile",
    "output_cap_bytes",
    "grace_s",
)
KILLED_BY = frozenset({"killed", "memory", "cpu", "disk", "pids"})
ERROR_TAIL = 500


@dataclass(frozen=True)
class Execution:
    """What became of one approved proposal."""

    status: str  # "succeeded" | "failed" | "timed_out" | "killed"
    outcome: dict[str, Any] | None  # Outcome.to_dict() when a sandbox ran
    limits: dict[str, Any]  # the resolved limits
    argv: list[str]
    error: str | None = None


class ToolExecutor:
    """Runs proposals' tools in the sandbox under resolved limits."""

    def __init__(
        self,
        config: AgentConfig,
        registry: ToolRegistry | None = None,
        runner: SandboxRunner | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or ToolRegistry.from_config(config)
        self.runner = runner or SandboxRunner(config.sandbox)

    @property
    def refuses_auto_execution(self) -> bool:
        """Limits that hold per process only are not limits on an action that
        forks: auto-execution is refused unless agent.yaml accepts them."""
        scope, _ = self.runner.limits
        return scope != "per-sandbox" and not self.config.auto_executor.accept_per_process_limits

    def resolve_limits(self, tool: Tool, decision_limits: Mapping[str, Any]) -> dict[str, Any]:
        """decision ∩ tool defaults ∩ tool config ∩ global maxima: the
        smallest number of each, network only if all allow it."""
        out: dict[str, Any] = self.config.auto_executor.limits.as_limits()
        for source in (tool.default_limits, tool.config.limits, decision_limits):
            for key in LIMIT_KEYS:
                if key in source:
                    out[key] = min(out.get(key, source[key]), source[key])
        # A decision that says nothing about the network does not allow it.
        out["network"] = (
            tool.needs_network
            and tool.config.allow_network
            and decision_limits.get("network") is True
        )
        return out

    def execute(
        self,
        proposal_id: str,
        proposal: Mapping[str, Any],
        decision_limits: Mapping[str, Any],
        *,
        on_start: Callable[[int], None] | None = None,
        halted: Callable[[], bool] | None = None,
    ) -> Execution:
        """Runs the proposal's tool; never raises for a tool or sandbox problem.
        `on_start` gets the sandbox's host pid once it runs (the emergency stop
        kills it by that pid). `halted` is asked right before the sandbox starts
        and right after: an emergency stop that comes while the execution is
        being set up must not let it run."""
        try:
            tool = self.registry.get(str(proposal.get("tool")))
        except JanusError as e:
            return Execution("failed", None, {}, [], str(e))
        limits = self.resolve_limits(tool, decision_limits)
        argv: list[str] = []
        fresh: Path | None = None
        try:
            if tool.working_dir is not None:
                workdir = tool.working_dir
                self._make_dir(workdir)
            else:
                self._make_dir(self.config.harness.work_dir)
                prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", proposal_id)[:64] + "-"
                fresh = Path(tempfile.mkdtemp(prefix=prefix, dir=self.config.harness.work_dir))
                workdir = fresh
            invocation = tool.plan(proposal, workdir)
            argv = invocation.argv
            if self.runner.method == "unsandboxed" and not tool.reads_only(proposal):
                return Execution(
                    "failed",
                    None,
                    limits,
                    argv,
                    f"{tool.name}: this proposal is not read-only; it never runs unsandboxed",
                )
            if self.refuses_auto_execution:
                _, why = self.runner.limits
                return Execution(
                    "failed",
                    None,
                    limits,
                    argv,
                    f"limits would hold per process only ({why}); refusing to execute. "
                    "Set auto_executor.accept_per_process_limits: true to accept that",
                )
            profile = self.runner.profile(
                workdir,
                network=invocation.network and limits["network"],
                read_only_paths=invocation.read_only_paths,
                env=invocation.env,
                tmp_size_mb=limits["disk_mb"],
            )
            values = {k: limits[k] for k in LIMIT_KEYS if k in limits}
            if halted is not None and halted():
                return Execution("killed", None, limits, argv, "emergency stop: never started")
            sandbox = self.runner.spawn(
                argv, profile, make_limits(values), keep_results=fresh is None
            )
            # A stop between the check and the spawn: its kill_all may have come
            # before this sandbox existed.
            if halted is not None and halted():
                sandbox.kill()
            if on_start is not None:
                on_start(sandbox.pid)
            outcome = sandbox.wait()
        except (JanusError, OSError) as e:
            return Execution("failed", None, limits, argv, str(e))
        finally:
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
        status, error = _status(outcome)
        if sandbox.left_out and status == "succeeded":
            status, error = "failed", "results not all kept: " + "; ".join(sandbox.left_out)
        return Execution(status, outcome.to_dict(), limits, argv, error)

    def _make_dir(self, path: Path) -> None:
        """Creates a private dir. One that exists must be a real directory of
        ours that others cannot write: it usually lives in the shared temp
        dir, where anyone could have put a link or a dir of their own first.
        (The sandbox never sees it: under root its contents go through the
        sandbox's own scratch space.)"""
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(f"work dir {str(path)!r} is not a directory (a link or a file)")
        if st.st_mode & 0o022:
            raise OSError(f"work dir {str(path)!r} is writable by others; refusing to use it")
        if st.st_uid != os.geteuid():
            raise OSError(f"work dir {str(path)!r} belongs to uid {st.st_uid}, not to this service")


def _status(outcome: Outcome) -> tuple[str, str | None]:
    if outcome.limit == "timeout":
        return "timed_out", "the wall-clock limit was reached"
    if outcome.limit in KILLED_BY:
        return "killed", f"ended by the {outcome.limit} limit"
    if outcome.exit_code == 0:
        return "succeeded", None
    detail = outcome.stderr.decode(errors="replace").strip()[-ERROR_TAIL:]
    return "failed", f"exited with status {outcome.exit_code}" + (f": {detail}" if detail else "")
