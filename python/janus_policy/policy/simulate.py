"""Dry runs: a policy over recorded proposals, and what a change would flip.

Sources are JSON Lines (one proposal per line, or audit records carrying a
`proposal` object, as `decisions.jsonl` does), YAML (a list of proposals), or
the proposal store (a state dir, or its janus.db).
Large inputs are split over worker processes, each with its own engine.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from janus_policy import documents
from janus_policy.errors import InputError, Location
from janus_policy.policy.evaluate import PolicyEngine, Settings
from janus_policy.policy.load import DECISIONS, load_policy
from janus_policy.proposals.store import DB_NAME, Store

Verdict = tuple[str, tuple[str, ...]]  # decision, matched rule ids


class Row(NamedTuple):
    """One judged proposal (a tuple: hundreds of thousands are made)."""

    label: str  # where the proposal came from: path:line
    verdict: Verdict
    baseline: Verdict | None = None

    @property
    def flipped(self) -> bool:
        return self.baseline is not None and self.baseline[0] != self.verdict[0]

    @property
    def more_permissive(self) -> bool:
        """The change lets this proposal through more easily."""
        return self.flipped and DECISIONS.index(self.verdict[0]) < DECISIONS.index(
            self.baseline[0] if self.baseline else "deny"
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.label,
            "decision": self.verdict[0],
            "rules": list(self.verdict[1]),
        }
        if self.baseline is not None:
            d["baseline_decision"] = self.baseline[0]
            d["rules_added"] = sorted(set(self.verdict[1]) - set(self.baseline[1]))
            d["rules_removed"] = sorted(set(self.baseline[1]) - set(self.verdict[1]))
        return d


@dataclass
class Report:
    rows: list[Row]
    by_decision: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)

    @property
    def flips(self) -> list[Row]:
        """Flipped proposals, those the change makes more permissive first."""
        return sorted((r for r in self.rows if r.flipped), key=lambda r: not r.more_permissive)


@dataclass(frozen=True)
class _Lines:
    """A slice of a JSON Lines file, parsed where it is judged (in a worker),
    so the parent process only splits lines."""

    path: str
    first: int  # line number of lines[0]
    lines: list[str]
    total: int  # lines in the file: a bad last line is a torn append, skipped


Batch = _Lines | list[tuple[str, dict[str, Any]]]


def _batches(path: Path, size: int) -> Iterator[Batch]:
    """A source in batches of about `size` items: slices of a JSONL file, or
    parsed (where, proposal) pairs from a YAML file or the proposal store."""
    if path.is_dir() or path.suffix == ".db":
        db = path / DB_NAME if path.is_dir() else path
        if not db.is_file():
            raise InputError("E000", f"no proposal store ({DB_NAME}) here", Location(str(path)))
        store = Store(db.parent)
        try:
            pairs = [(f"{db}:{r.id}", r.proposal) for r in store.proposals(newest_first=False)]
        finally:
            store.close()
    elif path.suffix in (".yaml", ".yml"):
        doc = documents.read(path)
        if not isinstance(doc.data, list):
            raise InputError("E105", "a YAML source is a list of proposals", doc.location(()))
        pairs = []
        for i, item in enumerate(doc.data):
            if (proposal := _proposal_of(item, doc.location((i,)))) is not None:
                pairs.append((str(doc.location((i,))), proposal))
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError("E000", f"cannot read file: {e}", Location(str(path))) from None
        for i in range(0, len(lines), size):
            yield _Lines(str(path), i + 1, lines[i : i + size], len(lines))
        return
    for i in range(0, len(pairs), size):
        yield pairs[i : i + size]


def _parse(batch: Batch) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(batch, _Lines):
        return batch
    out = []
    for n, line in enumerate(batch.lines, batch.first):
        if not line.strip():
            continue
        try:
            item = documents.parse_json(line, batch.path, n)
        except InputError as e:
            if e.code == "E001" and n == batch.total:
                continue  # torn last line
            raise
        if (proposal := _proposal_of(item, Location(batch.path, n, 1))) is not None:
            out.append((f"{batch.path}:{n}", proposal))
    return out


def read_proposals(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, proposal) for each proposal of a source: a JSONL or YAML file
    (where = path:line; a torn last line of a JSONL log, left by a crash
    mid-append, is skipped), or the proposal store of a state dir (where =
    database:proposal id), oldest first."""
    for batch in _batches(path, 2000):
        yield from _parse(batch)


def _proposal_of(item: Any, where: Location) -> dict[str, Any] | None:
    """The proposal of an item; None for an audit record other than a decision."""
    if isinstance(item, dict) and item.get("kind", "decision") != "decision":
        return None
    if isinstance(item, dict) and isinstance(item.get("proposal"), dict):
        item = item["proposal"]  # an audit record
    if not isinstance(item, dict):
        raise InputError("E105", "expected a proposal (an object)", where)
    return item


# ---- workers: one engine (or two) per process ----

_engines: tuple[PolicyEngine, PolicyEngine | None] | None = None


def _init(policy: str, baseline: str | None, settings: Settings) -> None:
    global _engines  # noqa: PLW0603 (one per worker process)
    base = PolicyEngine(load_policy(baseline), settings) if baseline else None
    _engines = (PolicyEngine(load_policy(policy), settings), base)


Judged = list[tuple[str, Verdict, Verdict | None]]


def _judge(batch: Batch) -> Judged:
    assert _engines is not None
    engine, base = _engines
    out: Judged = []
    for label, p in _parse(batch):
        d = engine.evaluate(p)
        b = base.evaluate(p) if base else None
        out.append((label, (d.decision, d.matched_ids), (b.decision, b.matched_ids) if b else None))
    return out


def simulate(
    policy: Path,
    source: Path,
    *,
    baseline: Path | None = None,
    workers: int = 1,
    settings: Settings | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    settings = settings or Settings()
    # Load both once here, so a broken policy is reported before any work.
    load_policy(policy)
    if baseline:
        load_policy(baseline)
    # The source is opened (and a bad one reported) here, before any worker starts.
    batches = _batches(source, 2000)
    first = next(batches, None)
    todo = itertools.chain([first] if first is not None else [], batches)
    args = (str(policy), str(baseline) if baseline else None, settings)
    report = Report([])
    with contextlib.ExitStack() as stack:
        judged: Iterator[Judged]
        if workers <= 1:
            _init(*args)
            judged = map(_judge, todo)
        else:
            # forkserver: workers never inherit a lock another thread held at fork time.
            ctx = multiprocessing.get_context("forkserver")
            # Workers fork from a server that has the engine imported already.
            ctx.set_forkserver_preload([__name__])
            pool = stack.enter_context(ctx.Pool(workers, initializer=_init, initargs=args))
            judged = pool.imap(_judge, todo)
        for result in judged:
            report.rows.extend(map(Row._make, result))
            if progress:
                progress(len(report.rows))
    for row in report.rows:
        report.by_decision[row.verdict[0]] += 1
        report.by_rule.update(row.verdict[1])
    return report
