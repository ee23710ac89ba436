"""The thinking cycle: once per interval, ask the model for one proposal for
the active mission and put it on the same path as a submitted one (novelty,
policy, lifecycle).

The prompt is the constitution, the mission (objective, allowed action types,
budget left, the current stage) and the outcomes of the mission's latest
proposals, trimmed to the model's context with its own tokenizer. The cycle
runs on its own thread, so a slow generation never holds up the daemon's
tick; a model that fails to load or to generate is logged and retried after a
growing back-off, never in a tight loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from janus_policy.agent.backends import Backend
from janus_policy.agent.missions import IllegalMissionTransition, Mission, MissionBook
from janus_policy.agent.prompt import CONSTITUTION, build_prompt
from janus_policy.proposals.lifecycle import Lifecycle
from janus_policy.proposals.states import FINISHED
from janus_policy.proposals.store import Record
from janus_policy.text import clean, what

#: The longest back-off, as a multiple of the first.
MAX_BACKOFF = 64
#: How long stop() waits for a generation under way.
STOP_WAIT_S = 5.0


def outcome_line(r: Record) -> str:
    """One line per earlier proposal, for the model to learn from."""
    line = f"{what(r.proposal)} -> {r.state}"
    if r.outcome:
        out = (r.outcome.get("stdout") or "").strip().splitlines()
        line += f" (exit {r.outcome.get('exit_code')}"
        line += f", first line: {out[0]})" if out else ")"
    elif r.reason:
        line += f" ({r.reason})"
    return clean(line, 200)


class ThinkingCycle:
    def __init__(
        self,
        lifecycle: Lifecycle,
        missions: MissionBook,
        backend: Backend,
        *,
        constitution: str = CONSTITUTION,
        recent_outcomes: int = 5,
        interval: Callable[[], float],
        failure_backoff_s: float = 1.0,
        log: Callable[..., None],
        on_proposal: Callable[[Record], None],
        tools: Sequence[str] = (),
    ) -> None:
        self.lifecycle = lifecycle
        self.missions = missions
        self.backend = backend
        self.constitution = constitution
        self.recent_outcomes = recent_outcomes
        self.interval = interval
        self.failure_backoff_s = failure_backoff_s
        self.log = log
        self.on_proposal = on_proposal
        #: The tools a generated proposal may name: those that take a command.
        self.tools = tuple(tools)
        self.proposed = 0
        self.failures = 0
        self.exhausted = False  # a script that ran out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prompt(self, mission: Mission, described: str) -> str:
        recent = self.lifecycle.store.proposals(limit=50)
        mine = [r for r in recent if r.mission == mission.id and r.state in (*FINISHED, "rejected")]
        outcomes = [outcome_line(r) for r in reversed(mine[: self.recent_outcomes])]
        return build_prompt(
            constitution=self.constitution,
            mission=described,
            outcomes=outcomes,
            count_tokens=self.backend.count_tokens,
            budget=self.backend.context_tokens,
        )

    def step(self) -> Record | None:
        """One cycle: the new proposal's record, or None when there is no
        active mission or nothing more to propose. Raises BackendError."""
        active = self.missions.active()
        if active is None or self.exhausted:
            return None
        mission, state = active
        proposal = self.backend.propose(
            self.prompt(mission, self.missions.describe(mission, state)),
            tools=self.tools,
            action_types=mission.allowed_action_types,
        )
        if proposal is None:
            self.exhausted = True
            self.log("agent_exhausted", backend=self.backend.name, proposed=self.proposed)
            return None
        # The proposal serves the active mission, whatever the model wrote.
        proposal = {**proposal, "mission": mission.id}
        refuse = None
        try:
            # Counted first: a crash in between may waste a proposal of the
            # budget, never overspend it.
            self.missions.record_proposal(mission.id, proposal)
        except IllegalMissionTransition as e:  # paused or spent meanwhile
            refuse = str(e)
        if refuse is None and proposal["action_type"] not in mission.allowed_action_types:
            refuse = (
                f"action type {proposal['action_type']!r} is not one mission {mission.id} "
                f"allows ({', '.join(mission.allowed_action_types)})"
            )
        record = self.lifecycle.submit(
            proposal, source=f"agent ({self.backend.name})", refuse=refuse
        )
        self.proposed += 1
        return record

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                record = self.step()
            except Exception as e:  # a model, a store, a mission file: never kill the thread
                self.failures += 1
                wait = min(
                    self.failure_backoff_s * 2 ** (self.failures - 1),
                    self.failure_backoff_s * MAX_BACKOFF,
                )
                self.log("agent_error", error=str(e), retry_in_s=round(wait, 3))
                continue
            self.failures = 0
            if record is not None:
                self.log("proposed", proposal_id=record.id, state=record.state)
                self.on_proposal(record)
            wait = self.interval()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="janus-thinking", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A generation under way is not waited for past this: the daemon
            # has executions to record before systemd's stop timeout.
            self._thread.join(timeout=STOP_WAIT_S)
            if self._thread.is_alive():
                return  # the backend is still in use; it goes with the process
        self.backend.close()

    @property
    def busy(self) -> bool:
        """Whether it may still propose: a mission is active and the backend
        has not run out."""
        return not self.exhausted and self.missions.active() is not None

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "proposed": self.proposed,
            "failures": self.failures,
            "exhausted": self.exhausted,
        }
