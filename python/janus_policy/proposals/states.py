"""The lifecycle of a proposal (DESIGN.md §6) as data: its states and the
transitions allowed between them. The store refuses everything else."""

from __future__ import annotations

from janus_policy.errors import JanusError

#: Awaiting a step of the system or of a human.
PENDING = ("proposed", "escalated", "approved")
#: What an execution ends in.
FINISHED = ("succeeded", "failed", "timed_out", "killed")
#: Nothing happens to these any more.
TERMINAL = ("rejected", *FINISHED)
STATES = (*PENDING, "running", "suspended", "interrupted", *TERMINAL)

TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"approved", "escalated", "rejected", "suspended"}),
    # A human decides; an expired request is rejected (or renewed in place).
    "escalated": frozenset({"approved", "rejected", "suspended"}),
    # A human approval that is not used in time is rejected.
    "approved": frozenset({"running", "rejected", "suspended"}),
    "running": frozenset({*FINISHED, "interrupted"}),
    # After an emergency stop a human looks again at each one (one the policy
    # never decided goes back to it).
    "suspended": frozenset({"approved", "rejected", "proposed"}),
    # Found running after a crash: re-run (requeue) or give up.
    "interrupted": frozenset({"approved", "rejected"}),
}


class IllegalTransition(JanusError):
    """A transition the lifecycle does not allow."""


class Conflict(JanusError):
    """Another process changed the proposal first (it approved, rejected or
    started it); nothing was changed by this call."""


def check(proposal_id: str, current: str, to: str) -> None:
    if to not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "nothing (final)"
        raise IllegalTransition(
            f"proposal {proposal_id} is {current}: it cannot become {to} "
            f"(from {current}: {allowed})"
        )
