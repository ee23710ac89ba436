"""The thinking cycle's prompt: a constitution, the active mission and recent
outcomes, trimmed to the model's context budget.

Token counts are not additive (a tokenizer may merge across a join), so every
candidate prompt is counted whole and only one that was counted to fit is
returned. What gives way first: the oldest outcomes, then the tail of the
mission text; the constitution never.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from janus_policy.agent.backends import BackendError

__all__ = ["CONSTITUTION", "build_prompt"]

CONSTITUTION = """\
You are the planning agent of Janus Policy, running on one Linux host. You do not act: you \
propose one action at a time. Every proposal is judged by the operator's policy, which approves \
it, escalates it to a human, or denies it; an approved action runs in a sandbox with no network \
and tight resource limits, and its outcome comes back to you. Serve the mission below with the \
smallest useful step. Prefer read-only, low-risk actions, declare risk honestly (the policy can \
only raise it), never repeat a proposal, and say why in the rationale. Answer with exactly one \
JSON proposal object: tool, action_type, risk, rationale, and the command the tool runs."""

#: What marks a mission text cut to fit.
CUT = " [...]"


def build_prompt(
    *,
    constitution: str,
    mission: str,
    outcomes: Sequence[str],
    count_tokens: Callable[[str], int],
    budget: int,
) -> str:
    """The prompt for one proposal, at most `budget` tokens by `count_tokens`.

    `outcomes` are one line each, oldest first; as many of the newest as fit
    are kept. The mission text is cut only when even it alone does not fit.
    Raises BackendError when the constitution alone is over the budget.
    """
    lines = [" ".join(o.split()) for o in outcomes]

    def render(mission_text: str, kept: int) -> str:
        shown = lines[len(lines) - kept :] if kept else []
        history = "\n".join(f"- {line}" for line in shown) or "(none yet)"
        return (
            f"{constitution.strip()}\n\n"
            f"Mission:\n{mission_text.strip()}\n\n"
            f"Recent outcomes, oldest first:\n{history}\n\n"
            "Proposal (JSON):\n"
        )

    def fits(text: str) -> bool:
        return count_tokens(text) <= budget

    if not fits(render(mission, 0)):
        return _cut_mission(mission, lambda m: render(m, 0), fits, budget)
    # The largest number of newest outcomes that fits; 0 is known to fit.
    low, high = 0, len(lines)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(render(mission, mid)):
            low = mid
        else:
            high = mid - 1
    return render(mission, low)


def _cut_mission(
    mission: str, render: Callable[[str], str], fits: Callable[[str], bool], budget: int
) -> str:
    """The prompt with the longest head of the mission text that fits."""
    if not fits(render(CUT)):
        raise BackendError(
            f"the constitution alone does not fit in the model's prompt budget of {budget} "
            "tokens; shorten it or give the model a larger context (llama_cpp.n_ctx)"
        )
    low, high = 0, len(mission) - 1  # chars of the mission kept; 0 is known to fit
    while low < high:
        mid = (low + high + 1) // 2
        if fits(render(mission[:mid].rstrip() + CUT)):
            low = mid
        else:
            high = mid - 1
    return render(mission[:low].rstrip() + CUT)
