"""`janus-policy missions list|show|activate|pause`: the agent's missions and
their state.

Exit codes: 0 done, 1 a change the mission's status does not allow (activating
a completed mission, pausing one that is not active), 2 bad input (an unknown
mission id, a bad mission file).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from janus_policy.agent.missions import IllegalMissionTransition, Mission, MissionBook, MissionState
from janus_policy.cli._common import EXIT_FINDINGS, EXIT_OK, add_format, print_json, table
from janus_policy.cli._state import add_state_options, config_of
from janus_policy.proposals.lifecycle import operator

#: mission_log records `show` prints.
HISTORY = 10


def register(verbs: Any) -> None:
    group: argparse.ArgumentParser = verbs.add_parser(
        "missions",
        help="list, show, activate and pause the agent's missions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="missions_verb", metavar="VERB", required=True)

    p: argparse.ArgumentParser = sub.add_parser(
        "list", help="every mission with its status, proposals used and stage"
    )
    add_state_options(p)
    add_format(p)
    p.set_defaults(handler=run_list)

    p = sub.add_parser(
        "show", help="one mission: objective, stages, state and its latest mission_log records"
    )
    p.add_argument("id", help="mission id")
    add_state_options(p)
    add_format(p)
    p.set_defaults(handler=run_show)

    for verb, text in (
        ("activate", "make a mission the active one (the active one is paused)"),
        ("pause", "pause the active mission"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("id", help="mission id")
        add_state_options(p)
        add_format(p)
        p.set_defaults(handler=run_change, change=verb)


def _book(args: argparse.Namespace) -> MissionBook:
    return MissionBook.open(config_of(args))


def _stage(mission: Mission, state: MissionState) -> str:
    if not mission.stages:
        return "-"
    if state.stage >= len(mission.stages):
        return "done"
    kind = mission.stages[state.stage].kind
    where = f", segment {state.segment}" if kind == "read_chunks" else ""
    return f"{state.stage + 1}/{len(mission.stages)} {kind}{where}"


def _summary(mission: Mission, state: MissionState) -> dict[str, Any]:
    return {
        "id": mission.id,
        "status": state.status,
        "proposals": state.proposals,
        "budget": mission.proposal_budget,
        "priority": mission.priority,
        "stage": state.stage,
        "stages": len(mission.stages),
        "segment": state.segment,
        "file": mission.location.path,
    }


def run_list(args: argparse.Namespace) -> int:
    found = _book(args).missions()
    if args.format == "json":
        print_json([_summary(m, s) for m, s in found])
        return EXIT_OK
    if not found:
        print(f"no missions in {config_of(args).missions_dir}")
        return EXIT_OK
    rows = [[m.id, s.status, f"{s.proposals}/{m.proposal_budget}", _stage(m, s)] for m, s in found]
    print(table(rows, ["ID", "STATUS", "PROPOSALS", "STAGE"]))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    book = _book(args)
    mission, state = book.get(args.id)
    history = book.history(mission.id, HISTORY)
    if args.format == "json":
        print_json(
            {
                **_summary(mission, state),
                "objective": mission.objective,
                # Here the stages themselves, not their number.
                "allowed_action_types": list(mission.allowed_action_types),
                "stages": [
                    {"kind": s.kind, "text": s.text, "path": s.path, "successes": s.successes}
                    for s in mission.stages
                ],
                "state": state.to_dict(),
                "history": history,
            }
        )
        return EXIT_OK
    print(f"mission {mission.id} ({mission.location})")
    print(f"  status: {state.status}")
    print(f"  objective: {mission.objective.strip()}")
    print(f"  allowed action types: {', '.join(mission.allowed_action_types)}")
    print(f"  proposals: {state.proposals} of {mission.proposal_budget} made")
    print(f"  priority: {mission.priority}")
    for i, s in enumerate(mission.stages):
        current = i == state.stage
        if s.kind == "read_chunks":
            what = f"{s.path}" + (f", next segment {state.segment}" if current else "")
        else:
            what = f"done after {s.successes} succeeded proposals"
            what += f", {len(state.succeeded)} so far" if current else ""
        print(f"  {'>' if current else ' '} stage {i + 1} {s.kind}: {what}")
        if s.text:
            print(f"      {s.text.strip()}")
    print(f"  mission_log ({len(history)} latest):" if history else "  mission_log: no records")
    for r in history:
        print(
            f"    {r.get('ts')}  {r.get('from')} -> {r.get('to')}  by {r.get('actor')}: "
            f"{r.get('reason')}"
        )
    return EXIT_OK


def run_change(args: argparse.Namespace) -> int:
    book = _book(args)
    before = book.active()
    try:
        if args.change == "activate":
            state = book.activate(args.id, actor=operator())
        else:
            state = book.pause(args.id, actor=operator())
    except IllegalMissionTransition as e:
        print(f"janus-policy: {e}", file=sys.stderr)
        return EXIT_FINDINGS
    if args.format == "json":
        print_json({"id": args.id, **state.to_dict()})
        return EXIT_OK
    note = ""
    if args.change == "activate" and before is not None and before[0].id != args.id:
        note = f" (mission {before[0].id} paused)"
    print(f"mission {args.id}: {state.status}{note}")
    return EXIT_OK
