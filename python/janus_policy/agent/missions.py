"""Missions (DESIGN.md §8): what the agent works toward, one YAML file each in
the missions dir, checked against the `mission` JSON Schema.

A mission's state lives in `missions.json` in the state dir, so it survives
restarts: its status, the proposals made for it, its current stage and, in a
read_chunks stage, the next segment to read.

    inactive ──activate──► active ◄──activate / pause──► paused
    active | paused ──(budget spent)──► exhausted ──activate (budget raised)──► active
    active | paused | exhausted ──(last stage done)──► completed

One mission is active at a time: activating one pauses the active one. Every
status change and every stage done is appended to `mission_log.jsonl`. The
daemon and the operator's commands change the file from several threads and
processes, so each change is made under an exclusive lock on a file beside it
and read fresh; the YAML files are read again whenever they change.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from janus_policy import documents
from janus_policy.audit import AuditLogs, log_files, read_records
from janus_policy.documents import Document, did_you_mean, pointer
from janus_policy.errors import InputError, JanusError, Location
from janus_policy.execution.tools import SEGMENT_LINES
from janus_policy.proposals.states import FINISHED
from janus_policy.proposals.store import Record
from janus_policy.runtime.control import write_json

if TYPE_CHECKING:
    from janus_policy.config import AgentConfig

__all__ = [
    "STATE_FILE",
    "STATUSES",
    "IllegalMissionTransition",
    "Mission",
    "MissionBook",
    "MissionError",
    "MissionState",
    "Stage",
    "load_missions",
]

STATE_FILE = "missions.json"
STATUSES = ("inactive", "active", "paused", "completed", "exhausted")
MISSION_SUFFIXES = (".yaml", ".yml")
#: The actor of the changes the agent's own proposals bring about.
AGENT = "agent"
_FORMAT = 1


class MissionError(InputError):
    """Mission files that cannot be used; `findings` lists every problem, the
    first of which is this error's own code, position and field."""

    def __init__(self, findings: list[InputError]) -> None:
        self.findings = findings
        first = findings[0]
        super().__init__(first.code, first.message, first.location, first.field)

    def __str__(self) -> str:
        return "\n".join(str(f) for f in self.findings)


class IllegalMissionTransition(JanusError):
    """A change of status the mission's current status does not allow."""


@dataclass(frozen=True)
class Stage:
    kind: str  # "instruction" | "read_chunks"
    text: str
    path: Path | None = None  # read_chunks: the document, absolute
    successes: int = 1  # instruction: succeeded proposals that finish it


@dataclass(frozen=True)
class Mission:
    id: str
    objective: str
    allowed_action_types: tuple[str, ...]
    proposal_budget: int
    stages: tuple[Stage, ...]
    location: Location
    priority: int = 0


@dataclass(frozen=True)
class MissionState:
    status: str = "inactive"
    proposals: int = 0  # proposals made for the mission
    stage: int = 0  # index of the current stage; len(stages) once all are done
    segment: int = 0  # read_chunks: the next segment to read
    #: instruction: the succeeded proposals counted toward the current stage.
    succeeded: tuple[str, ...] = ()
    updated_at: float | None = None

    def budget_left(self, mission: Mission) -> int:
        return max(0, mission.proposal_budget - self.proposals)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "succeeded": list(self.succeeded)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MissionState:
        state = cls(**{**data, "succeeded": tuple(data.get("succeeded", ()))})
        if state.status not in STATUSES:
            raise ValueError(f"unknown status {state.status!r}")
        return state


# ---- loading ----


def mission_files(missions_dir: Path) -> list[Path]:
    """The mission files of a dir, by name; none when the dir does not exist."""
    try:
        names = sorted(os.listdir(missions_dir))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise InputError(
            "E000", f"cannot read the missions dir: {e.strerror}", Location(str(missions_dir))
        ) from None
    return [
        missions_dir / n for n in names if n.endswith(MISSION_SUFFIXES) and not n.startswith(".")
    ]


def load_missions(missions_dir: Path) -> list[Mission]:
    """Every mission of the dir, highest priority first, then by id. Raises
    MissionError (an InputError) listing every problem with its position."""
    findings: list[InputError] = []
    found: dict[str, Mission] = {}
    for path in mission_files(Path(missions_dir)):
        try:
            doc = documents.read(path)
        except InputError as e:
            findings.append(e)
            continue
        problems = documents.validation_errors(doc, "mission")
        if not problems:
            mission, problems = _build(doc, path)
            if mission.id in found:
                problems.append(
                    _error(
                        doc,
                        "M001",
                        f"duplicate mission id {mission.id!r}: also {found[mission.id].location}",
                        ("id",),
                    )
                )
            elif not problems:
                found[mission.id] = mission
        findings += problems
    if findings:
        raise MissionError(findings)
    return sorted(found.values(), key=lambda m: (-m.priority, m.id))


def _error(doc: Document, code: str, message: str, at: documents.JsonPath) -> InputError:
    return InputError(code, f"{pointer(at)}: {message}", doc.location(at), pointer(at))


def _build(doc: Document, path: Path) -> tuple[Mission, list[InputError]]:
    """A schema-valid document → Mission, with what the schema cannot say."""
    data: dict[str, Any] = doc.data
    problems: list[InputError] = []
    stages = []
    for i, s in enumerate(data.get("stages", [])):
        wrong = "path" if s["kind"] == "instruction" else "successes"
        if wrong in s:
            why = (
                "only a read_chunks stage reads a document"
                if wrong == "path"
                else "a read_chunks stage is done at the end of its document"
            )
            problems.append(
                _error(doc, "M002", f"not for {s['kind']} stages: {why}", ("stages", i, wrong))
            )
        where = s.get("path")
        stages.append(
            Stage(
                kind=s["kind"],
                text=s.get("text", ""),
                path=(path.parent / Path(where).expanduser()).resolve() if where else None,
                successes=s.get("successes", 1),
            )
        )
    mission = Mission(
        id=data["id"],
        objective=data["objective"],
        allowed_action_types=tuple(data["allowed_action_types"]),
        proposal_budget=data["proposal_budget"],
        stages=tuple(stages),
        location=doc.location(("id",)),
        priority=data.get("priority", 0),
    )
    return mission, problems


# ---- the book ----


@dataclass
class _Book:
    """The content of missions.json."""

    seq: int = 0  # of the last mission_log record written
    states: dict[str, MissionState] = field(default_factory=dict)
    #: Records of changes already saved but not yet in the log (a crash between).
    unlogged: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "seq": self.seq,
            "missions": {k: s.to_dict() for k, s in self.states.items()},
            "unlogged": self.unlogged,
        }


class _Change:
    """One locked read-modify-write of the book."""

    def __init__(self, book: _Book, missions: Mapping[str, Mission]) -> None:
        self.book = book
        self.missions = missions
        self.dirty = False

    def state(self, mission_id: str) -> MissionState:
        return self.book.states.get(mission_id, MissionState())

    def put(self, mission_id: str, state: MissionState) -> MissionState:
        state = replace(state, updated_at=time.time())
        self.book.states[mission_id] = state
        self.dirty = True
        return state

    def move(
        self, mission_id: str, state: MissionState, to: str, actor: str, reason: str
    ) -> MissionState:
        """Saves `state` with status `to` and queues its log record (also for
        a stage done, where the status stays)."""
        before = self.state(mission_id).status
        after = self.put(mission_id, replace(state, status=to))
        self.book.seq += 1
        mission = self.missions.get(mission_id)
        self.book.unlogged.append(
            {
                "mission": mission_id,
                "seq": self.book.seq,
                "from": before,
                "to": to,
                "actor": actor,
                "reason": reason,
                "proposals": after.proposals,
                "budget": mission.proposal_budget if mission else None,
                "stage": after.stage,
                "segment": after.segment,
            }
        )
        return after


class MissionBook:
    """The missions of a dir and their persisted state."""

    @classmethod
    def open(cls, config: AgentConfig) -> MissionBook:
        return cls(config.harness.state_dir, config.missions_dir, AuditLogs.of(config))

    def __init__(
        self,
        state_dir: Path,
        missions_dir: Path,
        audit: AuditLogs,
        *,
        poll_interval_s: float = 0.0,
    ) -> None:
        #: How often the mission files are looked at for changes (the daemon's
        #: harness.mission_poll_interval_s; commands look every time).
        self.poll_interval_s = poll_interval_s
        self._checked = 0.0
        self.state_dir = Path(state_dir)
        self.missions_dir = Path(missions_dir)
        self.audit = audit
        self.path = self.state_dir / STATE_FILE
        self._lock_path = self.state_dir / (STATE_FILE + ".lock")
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._missions: dict[str, Mission] = {}
        self._load()

    # ---- reading ----

    def _load(self) -> dict[str, Mission]:
        """The missions, read again when a file of the dir was added, removed
        or changed since the last read; raises MissionError when they are bad."""
        now = time.monotonic()
        if self._signature is not None and now - self._checked < self.poll_interval_s:
            return self._missions
        self._checked = now
        signature = []
        for p in mission_files(self.missions_dir):
            try:
                st = p.stat()
            except OSError:
                continue  # removed meanwhile: read as absent
            signature.append((p.name, st.st_mtime_ns, st.st_size))
        if tuple(signature) != self._signature:
            self._missions = {m.id: m for m in load_missions(self.missions_dir)}
            self._signature = tuple(signature)
        return self._missions

    def _mission(self, mission_id: str) -> Mission:
        missions = self._load()
        if mission_id not in missions:
            known = ", ".join(missions) or "none"
            raise InputError(
                "M003",
                f"no mission {mission_id!r}{did_you_mean(mission_id, list(missions))}; "
                f"missions of {self.missions_dir}: {known}",
                field="id",
            )
        return missions[mission_id]

    def _read(self) -> _Book:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _Book()
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply
            raise InputError(
                "E001", f"cannot read the mission state: {e}", Location(str(self.path))
            ) from None
        try:
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
            return _Book(
                seq=int(data["seq"]),
                states={k: MissionState.from_dict(v) for k, v in data["missions"].items()},
                unlogged=list(data["unlogged"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InputError(
                "E105", f"not a mission state file ({e!r})", Location(str(self.path))
            ) from None

    def missions(self) -> list[tuple[Mission, MissionState]]:
        states = self._read().states
        return [(m, states.get(m.id, MissionState())) for m in self._load().values()]

    def get(self, mission_id: str) -> tuple[Mission, MissionState]:
        mission = self._mission(mission_id)
        return mission, self._read().states.get(mission_id, MissionState())

    def active(self) -> tuple[Mission, MissionState] | None:
        return next(((m, s) for m, s in self.missions() if s.status == "active"), None)

    def history(self, mission_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The mission's latest `limit` records of mission_log.jsonl, oldest first."""
        found = [
            r
            for f in log_files(self.audit.missions.path)
            for _, r in read_records(f)
            if r.get("mission") == mission_id
        ]
        return found[-limit:] if limit else []

    # ---- changing ----

    @contextmanager
    def _change(self) -> Iterator[_Change]:
        missions = self._load()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A fresh open file description per change: flock then excludes the
        # daemon's other threads as well as other processes.
        with open(self._lock_path, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            book = self._read()
            if book.unlogged:  # a crash kept these from the log
                self._log(book, recovered=True)
            change = _Change(book, missions)
            yield change
            if change.dirty:
                # Saved first, then logged, then saved as logged: a crash in
                # between leaves the records in `unlogged`, written next time.
                write_json(self.path, book.to_dict())
                if book.unlogged:
                    self._log(book)

    def _log(self, book: _Book, *, recovered: bool = False) -> None:
        for record in book.unlogged:
            self.audit.missions.append(
                "mission", record | {"recovered": True} if recovered else record
            )
        book.unlogged = []
        write_json(self.path, book.to_dict())

    def activate(self, mission_id: str, *, actor: str) -> MissionState:
        """Makes the mission the active one, pausing the one that was."""
        mission = self._mission(mission_id)
        with self._change() as c:
            state = c.state(mission_id)
            if state.status == "active":
                return state
            if state.status == "completed":
                raise IllegalMissionTransition(
                    f"mission {mission_id} is completed: all its stages are done"
                )
            if state.status == "exhausted" and not state.budget_left(mission):
                raise IllegalMissionTransition(
                    f"mission {mission_id} is exhausted: {state.proposals} of "
                    f"{mission.proposal_budget} proposals made; raise its proposal_budget "
                    f"({mission.location.path}) to activate it again"
                )
            for other, s in list(c.book.states.items()):
                if s.status == "active":
                    c.move(other, s, "paused", actor, f"mission {mission_id} was activated")
            return c.move(mission_id, state, "active", actor, f"activated (was {state.status})")

    def pause(self, mission_id: str, *, actor: str) -> MissionState:
        self._mission(mission_id)
        with self._change() as c:
            state = c.state(mission_id)
            if state.status == "paused":
                return state
            if state.status != "active":
                raise IllegalMissionTransition(
                    f"mission {mission_id} is {state.status}: only an active mission can be paused"
                )
            return c.move(mission_id, state, "paused", actor, "paused")

    def record_proposal(self, mission_id: str, proposal: Mapping[str, Any]) -> MissionState:
        """Counts a proposal made for the mission; the one that spends the
        budget exhausts it. Only an active mission with budget left takes one
        (IllegalMissionTransition otherwise): it may have been paused, or
        spent, while the proposal was being made."""
        mission = self._mission(mission_id)
        with self._change() as c:
            state = c.state(mission_id)
            if state.status != "active" or not state.budget_left(mission):
                raise IllegalMissionTransition(
                    f"mission {mission_id} is {state.status} with {state.budget_left(mission)} "
                    "proposals of its budget left: it takes no proposal"
                )
            state = replace(state, proposals=state.proposals + 1)
            if state.budget_left(mission):
                return c.put(mission_id, state)
            return c.move(
                mission_id,
                state,
                "exhausted",
                AGENT,
                f"proposal budget spent: {state.proposals} of {mission.proposal_budget} made, "
                f"the last {proposal.get('tool')} {proposal.get('action_type')}",
            )

    def record_outcome(self, mission_id: str, record: Record) -> MissionState:
        """Advances the current stage by a finished proposal: a read_chunks
        stage by a succeeded read of its next segment, and to its end by a
        segment that reached the end of the document; an instruction stage by
        each succeeded proposal. After the last stage, the mission is completed."""
        mission = self._mission(mission_id)
        with self._change() as c:
            state = c.state(mission_id)
            if (
                record.state not in FINISHED
                or state.status not in ("active", "paused", "exhausted")
                or state.stage >= len(mission.stages)
            ):
                return state
            stage = mission.stages[state.stage]
            if stage.kind == "read_chunks":
                if _segment_read(record, stage) != state.segment:
                    return state
                done = _past_the_end(record) or _reached_the_end(record)
                if not done:
                    if record.state != "succeeded":
                        return state  # to be read again
                    return c.put(mission_id, replace(state, segment=state.segment + 1))
                read = state.segment + 1 if record.state == "succeeded" else state.segment
                what = f"{read} segments of {stage.path}"
            else:
                if record.state != "succeeded" or record.id in state.succeeded:
                    return state
                state = replace(state, succeeded=(*state.succeeded, record.id))
                if len(state.succeeded) < stage.successes:
                    return c.put(mission_id, state)
                what = f"{stage.successes} succeeded proposals"
            state = replace(state, stage=state.stage + 1, segment=0, succeeded=())
            last = state.stage == len(mission.stages)
            reason = f"stage {state.stage} of {len(mission.stages)} ({stage.kind}) done: {what}"
            return c.move(mission_id, state, "completed" if last else state.status, AGENT, reason)

    # ---- the prompt ----

    def describe(self, mission: Mission, state: MissionState) -> str:
        """The mission's part of the prompt."""
        lines = [
            f"Mission {mission.id}: {mission.objective.strip()}",
            f"Allowed action types: {', '.join(mission.allowed_action_types)}.",
            f"Proposals left: {state.budget_left(mission)} of {mission.proposal_budget}.",
        ]
        if state.stage < len(mission.stages):
            stage = mission.stages[state.stage]
            lines.append(f"Stage {state.stage + 1} of {len(mission.stages)}:")
            if stage.kind == "read_chunks":
                args = json.dumps({"path": str(stage.path), "segment": state.segment})
                lines.append(
                    f"Read the document {stage.path} chunk by chunk, one {SEGMENT_LINES:,}-line "
                    f"segment per proposal. Next: propose tool file_chunker with args {args}."
                )
            if stage.text:
                lines.append(stage.text.strip())
        elif mission.stages:
            lines.append("All stages are done.")
        return "\n".join(lines)


def _segment_read(record: Record, stage: Stage) -> int | None:
    """The segment of the stage's document the record read with file_chunker."""
    args = record.proposal.get("args")
    if record.tool != "file_chunker" or not isinstance(args, dict):
        return None
    path, segment = args.get("path"), args.get("segment")
    if not isinstance(path, str) or type(segment) is not int:
        return None
    return segment if Path(path).resolve() == stage.path else None


def _past_the_end(record: Record) -> bool:
    """file_chunker failed because the segment starts after the last line."""
    exit_code = (record.outcome or {}).get("exit_code")
    return record.state == "failed" and (exit_code == 3 or "past the end" in (record.reason or ""))


def _reached_the_end(record: Record) -> bool:
    """The segment read held the document's last line: it came back whole and
    shorter than a segment."""
    outcome = record.outcome or {}
    stdout = outcome.get("stdout")
    return (
        record.state == "succeeded"
        and isinstance(stdout, str)
        and not outcome.get("stdout_truncated")
        and stdout.count("\n") < SEGMENT_LINES
    )
